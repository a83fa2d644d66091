"""Media are fetched safely: streamed to a bounded disk cache, typed from their bytes, and
every server-side request forgery refused permanently (docs/media.md)."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from herald.media.fetch import Fetcher, make_room
from herald.providers.base import ContentInvalid, MediaUnavailable
from herald.sandbox.media import image_bytes
from herald.security import outbound
from herald.settings import Settings
from tests.fixtures.media import MediaHost


def test_an_image_is_fetched_to_disk_and_typed_from_its_bytes(
    media_settings: Settings, media_host: MediaHost
) -> None:
    # The host says application/octet-stream: the type comes from the bytes.
    file = Fetcher(media_settings).fetch(
        media_host.image("png", w=120, h=90), cap=10**6, network="x"
    )
    assert (file.mime, file.width, file.height) == ("image/png", 120, 90)
    assert Path(file.path).stat().st_size == file.size
    assert Path(file.path).parent == Path(media_settings.media_cache_dir or "") / "held"


def test_a_video_has_its_duration_read_from_the_container(
    media_settings: Settings, media_host: MediaHost
) -> None:
    file = Fetcher(media_settings).fetch(
        media_host.video(seconds=12.5, size=200_000), cap=10**6, network="x"
    )
    assert (file.mime, file.size, file.duration_s) == ("video/mp4", 200_000, 12.5)


def test_over_the_cap_is_refused_permanently(
    media_settings: Settings, media_host: MediaHost
) -> None:
    with pytest.raises(
        ContentInvalid, match=r"larger than x accepts; the limit is 100,000 bytes"
    ) as caught:
        Fetcher(media_settings).fetch(media_host.video(size=300_000), cap=100_000, network="x")
    assert caught.value.rule == "x.media_size"
    assert not _files(media_settings)  # nothing half-written kept


def test_bytes_of_no_known_type_are_refused(
    media_settings: Settings, media_host: MediaHost
) -> None:
    with pytest.raises(ContentInvalid) as caught:
        Fetcher(media_settings).fetch(
            media_host.url("blob.bin", bytes=3000), cap=10**6, network="x"
        )
    assert caught.value.rule == "media.unreadable"
    # Never kept: a later fetch of the URL asks the host again (a CDN's error page once
    # failed the URL for good, for every workspace, without the host being asked again).
    assert not _files(media_settings)


def test_a_missing_file_is_permanent_and_a_failing_host_is_not(
    media_settings: Settings, media_host: MediaHost
) -> None:
    fetcher = Fetcher(media_settings)
    with pytest.raises(ContentInvalid, match="HTTP 404"):
        fetcher.fetch(media_host.url("nothing.png"), cap=10**6, network="x")
    with pytest.raises(MediaUnavailable):
        fetcher.fetch("http://127.0.0.1:9/image.png", cap=10**6, network="x")


def _files(settings: Settings) -> list[Path]:
    return [p for p in Path(settings.media_cache_dir or "").rglob("*") if p.is_file()]


def _resolving(table: dict[str, Sequence[str]]) -> outbound.Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        return table.get(host) or outbound.system_resolver(host, port)

    return resolve


FORGERIES = [
    ("http://localhost:{port}/_sandbox/media/image.png", "loopback"),
    ("http://[::1]:{port}/_sandbox/media/image.png", "loopback"),
    ("http://10.1.2.3/image.png", "private"),
    ("http://192.168.0.10/image.png", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/", "metadata"),
    ("http://[::ffff:127.0.0.1]/x.png", "loopback"),
    ("http://internal.example/image.png", "private"),
    ("file:///etc/passwd", "scheme"),
    ("{base}/redirect?to=http://10.0.0.5/secret.png", "private"),
    ("{base}/redirect?to=http://169.254.169.254/latest/", "metadata"),
    ("{base}/redirect?to=http://internal.example/x.png", "private"),
]


def test_server_side_request_forgery_is_refused_permanently(
    media_settings: Settings, media_host: MediaHost
) -> None:
    """Loopback, private ranges, metadata (IPv4 and IPv6), a name resolving to a private
    address, another scheme, and redirects to each: refused before any byte is read."""
    port = media_host.base.split(":")[2].split("/")[0]
    fetcher = Fetcher(media_settings, resolver=_resolving({"internal.example": ["10.9.8.7"]}))
    for url, reason in FORGERIES:
        target = url.format(port=port, base=media_host.base)
        with pytest.raises(ContentInvalid) as caught:
            fetcher.fetch(target, cap=10**6, network="mastodon")
        assert caught.value.rule == "media.destination_refused", target
        assert reason in str(caught.value) or reason == "scheme", (target, str(caught.value))


def test_the_cache_stays_within_its_budget(tmp_path: Path) -> None:
    for n, size in enumerate((400, 300, 200)):
        path = tmp_path / f"f{n}"
        path.write_bytes(b"x" * size)
        os.utime(path, (n, n))
    make_room(tmp_path, 500, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1", "f2"]  # the oldest went


def test_making_room_never_evicts_a_held_file_or_a_download_and_clears_dead_ones(
    tmp_path: Path,
) -> None:
    now_ns = time.time_ns()
    (tmp_path / "held").mkdir()
    live_held = tmp_path / "held" / f"{now_ns}.1.abc"
    live_part = tmp_path / f"{now_ns}.1.part"
    dead_held = tmp_path / "held" / f"{now_ns - 7200 * 10**9}.2.abc"
    dead_part = tmp_path / f"{now_ns - 7200 * 10**9}.2.part"
    for path in (live_held, live_part, dead_held, dead_part):
        path.write_bytes(b"x" * 300)
    cached = tmp_path / "f0"
    cached.write_bytes(b"x" * 300)
    make_room(tmp_path, 500, 1000, stale_after_s=3600)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(
        [f"held/{live_held.name}", live_part.name]
    )  # only the cache's own file went


def test_a_compressed_answer_is_refused_unread(media_settings: Settings) -> None:
    """A few kilobytes of gzip inside gzip unpack into hundreds of megabytes in one decoding
    step, before any size check: a hostile media host could take the worker's memory. Herald
    asks for the file as it is (Accept-Encoding: identity) and refuses an encoded answer."""
    layer = gzip.compress(b"\0" * 20_000_000)
    bomb = gzip.compress(layer)
    asked: list[str] = []

    class Bomb(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.headers.get("Accept-Encoding", ""))
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ContentInvalid) as caught:
            Fetcher(media_settings).fetch(
                f"http://127.0.0.1:{server.server_address[1]}/picture.png",
                cap=10**6,
                network="x",
            )
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.rule == "media.encoded"
    assert asked == ["identity"]
    assert not _files(media_settings)


class _Versioned(ThreadingHTTPServer):
    """A media host whose file can be replaced at the same URL, with an ETag per version
    (``etag=False``: no validators at all); it counts full answers and 304s."""

    def __init__(self, *, etag: bool = True) -> None:
        self.body = image_bytes("png", 10, 10)
        self.version = 1
        self.etag = etag
        self.full = 0
        self.unchanged = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tag = f'"v{host.version}"'
                if host.etag and self.headers.get("If-None-Match") == tag:
                    host.unchanged += 1
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.end_headers()
                    return
                host.full += 1
                self.send_response(200)
                if host.etag:
                    self.send_header("ETag", tag)
                self.send_header("Content-Length", str(len(host.body)))
                self.end_headers()
                self.wfile.write(host.body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/picture.png"

    def replace_file(self, width: int) -> None:
        self.body = image_bytes("png", width, width)
        self.version += 1

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def test_a_file_replaced_at_the_same_url_is_not_served_from_the_cache(
    media_settings: Settings,
) -> None:
    """The cache asks the host whether its copy is current (If-None-Match): unchanged costs a
    304, a replaced file is fetched again. Before, the first copy was served until evicted."""
    host = _Versioned()
    try:
        with Fetcher(media_settings) as fetcher:
            assert fetcher.fetch(host.url, cap=10**6, network="x").width == 10
            assert fetcher.fetch(host.url, cap=10**6, network="x").width == 10
            assert (host.full, host.unchanged) == (1, 1)
            host.replace_file(20)
            assert fetcher.fetch(host.url, cap=10**6, network="x").width == 20
            assert (host.full, host.unchanged) == (2, 1)
    finally:
        host.stop()


def test_a_file_without_validators_is_fetched_for_every_use(media_settings: Settings) -> None:
    """Nothing tells whether a copy of it is current: it is not reused."""
    host = _Versioned(etag=False)
    try:
        with Fetcher(media_settings) as fetcher:
            assert fetcher.fetch(host.url, cap=10**6, network="x").width == 10
            host.replace_file(30)
            assert fetcher.fetch(host.url, cap=10**6, network="x").width == 30
        assert host.full == 2
    finally:
        host.stop()


def test_a_file_in_use_outlives_its_eviction_from_the_cache(
    media_settings: Settings, media_host: MediaHost
) -> None:
    """An attempt holds what it fetched until it is done: another attempt making room in the
    cache evicts the cached copy, not the file the first attempt is about to upload. Before,
    the adapter's open() of the evicted path raised an OSError outside the error taxonomy."""
    small = media_settings.model_copy(update={"media_cache_max_bytes": 150_000})
    first = Fetcher(small)
    held = first.fetch(media_host.video(size=100_000, tag="a"), cap=10**6, network="x")
    with Fetcher(small) as second:
        second.fetch(media_host.video(size=100_000, tag="b"), cap=10**6, network="x")
        assert Path(held.path).stat().st_size == 100_000  # still there for its upload
    first.close()
    assert not Path(held.path).exists()  # released with the attempt
    cache = Path(small.media_cache_dir or "")
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) <= 150_000


def test_a_cache_on_a_filesystem_without_hard_links_copies_what_it_holds(
    media_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vfat, exFAT, many FUSE mounts and some SMB shares refuse hard links: holding a cached
    file then failed every attempt of every media post whose host sends validators."""

    def refused(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    host = _Versioned()
    try:
        with Fetcher(media_settings) as fetcher:
            first = fetcher.fetch(host.url, cap=10**6, network="x")
            again = fetcher.fetch(host.url, cap=10**6, network="x")
            assert (first.width, again.width) == (10, 10)
            assert Path(again.path).read_bytes() == host.body
        assert (host.full, host.unchanged) == (1, 1)
    finally:
        host.stop()


def test_the_cache_folder_is_the_workers_alone(media_settings: Settings) -> None:
    previous = os.umask(0o022)
    try:
        host = _Versioned()
        try:
            with Fetcher(media_settings) as fetcher:
                fetcher.fetch(host.url, cap=10**6, network="x")
        finally:
            host.stop()
    finally:
        os.umask(previous)
    assert Path(media_settings.media_cache_dir or "").stat().st_mode & 0o777 == 0o700
