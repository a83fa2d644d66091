"""Media are fetched safely: streamed to a bounded disk cache, typed from their bytes, and
every server-side request forgery refused permanently (docs/media.md)."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from herald.media.fetch import Fetcher, make_room
from herald.providers.base import ContentInvalid, MediaUnavailable
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
    assert Path(file.path).parent == Path(media_settings.media_cache_dir)


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
    assert not list(Path(media_settings.media_cache_dir).iterdir())  # nothing half-written kept


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
    assert not list(Path(media_settings.media_cache_dir).iterdir())


def test_a_missing_file_is_permanent_and_a_failing_host_is_not(
    media_settings: Settings, media_host: MediaHost
) -> None:
    fetcher = Fetcher(media_settings)
    with pytest.raises(ContentInvalid, match="HTTP 404"):
        fetcher.fetch(media_host.url("nothing.png"), cap=10**6, network="x")
    with pytest.raises(MediaUnavailable):
        fetcher.fetch("http://127.0.0.1:9/image.png", cap=10**6, network="x")


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
    assert not list(Path(media_settings.media_cache_dir).iterdir())
