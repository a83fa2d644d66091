"""Fetch a media URL to disk, safely (docs/media.md).

- Through the SSRF-safe outbound client (:mod:`herald.security.outbound`): http and https
  only, every resolved address and every redirect checked; loopback, private, link-local,
  multicast and metadata addresses refused unless the host is in
  ``HERALD_OUTBOUND_ALLOW_HOSTS``. A refusal is permanent (:class:`ContentInvalid`): the post
  fails with the reason, it is never retried.
- Streamed to a file in a bounded cache (``HERALD_MEDIA_CACHE_DIR``, at most
  ``HERALD_MEDIA_CACHE_MAX_BYTES``; the least recently used files go first), never held whole
  in memory; a body over the network's cap for the kind is cut off and refused as soon as it
  passes the cap, and the whole fetch has ``HERALD_MEDIA_FETCH_TIMEOUT_S``.
- A cached copy is used only once the host confirms it is current (a conditional request:
  ``If-None-Match`` / ``If-Modified-Since``, answered 304); a file the host gives no
  validators for is fetched for every use, never served from the cache, since a file
  replaced at the same URL would be published stale.
- An attempt holds what it fetched (a hard link of its own under ``held/``, a copy on a
  filesystem without hard links) until the
  :class:`Fetcher` closes, after the upload: another attempt making room evicts the cached
  copy, never the file an upload is about to read.
- The type comes from the bytes (:mod:`.probe`), not from ``Content-Type``.

The host being away (5xx, timeouts, refused connections) is :class:`MediaUnavailable`: the
post is tried again later, and the network's circuit does not count it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from herald.media.probe import Unreadable, probe
from herald.providers.base import ContentInvalid, LocalFile, MediaUnavailable
from herald.providers.media import size_text
from herald.security import outbound
from herald.settings import Settings

CHUNK = 256 * 1024
_AS_IT_IS = {"Accept-Encoding": "identity"}
HEAD = 512  # enough for every signature filetype reads


HELD = "held"
#: What ``link`` fails with where a filesystem has no hard links.
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
)
META = ".meta"
PART = ".part"


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    """What a fetch got: the file unchanged since the cached copy (a 304), or a new body
    (written to the part file) with the validators the host gave for it."""

    unchanged: bool
    validators: dict[str, str]


def _validators(response: httpx.Response) -> dict[str, str]:
    found = {
        "etag": response.headers.get("etag"),
        "last_modified": response.headers.get("last-modified"),
    }
    # Sent back as they came: only a value a header can carry again (printable ASCII).
    return {
        name: value
        for name, value in found.items()
        if value and len(value) <= 500 and value.isascii() and value.isprintable()
    }


def _conditions(validators: dict[str, str]) -> dict[str, str]:
    headers = {}
    if "etag" in validators:
        headers["If-None-Match"] = validators["etag"]
    if "last_modified" in validators:
        headers["If-Modified-Since"] = validators["last_modified"]
    return headers


def make_room(folder: Path, wanted: int, budget: int, *, stale_after_s: float = 86_400) -> None:
    """Delete the least recently used cached files until ``wanted`` more bytes fit in
    ``budget``. A file an attempt holds (under ``held/``) is not the cache's to delete, and
    neither is a download in progress; both are removed once older than ``stale_after_s``
    (left by a process that died)."""
    evictable = []
    total = 0
    stale = time.time() - stale_after_s
    for entry in (*folder.iterdir(), *_held_entries(folder)):
        with contextlib.suppress(OSError):
            stat = entry.lstat()
            if not entry.is_file():
                continue
            held = entry.parent.name == HELD
            if held or entry.name.endswith(PART):
                if _created(entry, stat.st_mtime) < stale:
                    entry.unlink()
                elif not (held and stat.st_nlink > 1):  # a held link of a cached file: counted once
                    total += stat.st_size
                continue
            total += stat.st_size
            if not entry.name.endswith(META):
                evictable.append((stat.st_mtime, stat.st_size, entry))
    for _, size, entry in sorted(evictable, key=lambda f: f[0]):
        if total + wanted <= budget:
            break
        with contextlib.suppress(OSError):
            entry.unlink()
            total -= size
            meta = folder / (entry.name.split(".")[0] + META)
            if _meta_file(meta) == entry.name:
                meta.unlink()


def _held_entries(folder: Path) -> list[Path]:
    try:
        return list((folder / HELD).iterdir())
    except OSError:
        return []


def _created(entry: Path, mtime: float) -> float:
    """When a held link or a part file was made: the nanoseconds its name starts with."""
    try:
        return int(entry.name.split(".")[0]) / 1e9
    except ValueError:
        return mtime


def _meta_file(meta: Path) -> str | None:
    """The body file a cache entry's metadata names, or None when there is none."""
    try:
        return str(json.loads(meta.read_text())["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Fetcher:
    """Fetches media for one publish attempt, over one outbound client (made on first use),
    and holds the files it fetched until :meth:`close` (or the ``with`` block's end), which
    comes after the upload. ``resolver`` is for tests only."""

    def __init__(self, settings: Settings, *, resolver: outbound.Resolver | None = None) -> None:
        self.settings = settings
        self._resolver = resolver
        self._client: httpx.Client | None = None
        self._held: list[Path] = []

    @functools.cached_property
    def folder(self) -> Path:
        """The media cache (worked out on first use: most posts carry no media)."""
        return Path(self.settings.media_cache_dir or Path(tempfile.gettempdir()) / "herald-media")

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the files this attempt held, and the client."""
        for path in self._held:
            with contextlib.suppress(OSError):
                path.unlink()
        self._held.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = outbound.client(self.settings, resolver=self._resolver)
        return self._client

    def fetch(self, url: str, *, cap: int, network: str) -> LocalFile:
        """The file at ``url`` on disk, at most ``cap`` bytes, held until :meth:`close`
        (raises the taxonomy's errors)."""
        cap = min(cap, self.settings.media_max_bytes)
        key = _key(url)
        meta = self.folder / (key + META)
        cached = self.folder / (_meta_file(meta) or key)
        validators = self._cached_validators(meta, cached)
        part = self.folder / f"{time.time_ns()}.{os.getpid()}{PART}"
        try:
            # The worker's alone (mode applies to the folder made, not to missing parents).
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.folder / HELD).mkdir(exist_ok=True, mode=0o700)
            answer = self._download(url, part, cap=cap, network=network, validators=validators)
            if answer.unchanged:
                try:
                    os.utime(cached)
                    found = self._probe(cached, network)
                    if found.size > cap:
                        raise _too_large(network, cap)
                    return self._hold(found, cached)
                except FileNotFoundError:  # evicted since it was asked about: fetched whole
                    answer = self._download(url, part, cap=cap, network=network, validators={})
            # Checked before it is cached: bytes of no known type (a CDN's error page) are
            # refused now and the URL asked again next time, not refused from the cache for
            # every workspace without the host ever being asked.
            found = self._probe(part, network)
            if not answer.validators:  # no way to tell later whether a copy is current
                return self._hold(found, part, cache=False)
            body = self.folder / f"{key}.{_key(json.dumps(answer.validators))[:16]}"
            part.replace(body)
            held = self._hold(found, body)
            self._write_meta(meta, body.name, answer.validators)
            return held
        except OSError as exc:  # the cache itself (a file evicted under us, a full disk)
            raise MediaUnavailable(
                f"media cache unusable: {exc.strerror or type(exc).__name__}", provider=network
            ) from None
        finally:
            with contextlib.suppress(OSError):
                part.unlink()

    def _cached_validators(self, meta: Path, cached: Path) -> dict[str, str]:
        """The validators of the cached copy, if there is one to revalidate."""
        if not cached.name.startswith(meta.name.removesuffix(META) + ".") or not cached.exists():
            return {}
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict):
            return {}
        return {
            k: str(stored[k]) for k in ("etag", "last_modified") if isinstance(stored.get(k), str)
        }

    def _write_meta(self, meta: Path, body: str, validators: dict[str, str]) -> None:
        temporary = meta.with_name(f"{time.time_ns()}.{os.getpid()}{PART}")
        try:
            temporary.write_text(json.dumps({"file": body, **validators}))
            temporary.replace(meta)
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()

    def _hold(self, found: LocalFile, path: Path, *, cache: bool = True) -> LocalFile:
        """Give this attempt a name of its own for ``path`` (moved there when not cached)."""
        held = self.folder / HELD / f"{time.time_ns()}.{os.getpid()}.{path.name}"
        if not cache:
            path.replace(held)
        else:
            try:
                os.link(path, held)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # A filesystem without hard links (vfat, exFAT, many FUSE mounts): a copy.
                shutil.copyfile(path, held)
        self._held.append(held)
        return dataclasses.replace(found, path=str(held))

    def _probe(self, path: Path, network: str) -> LocalFile:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEAD)
        try:
            return probe(str(path), size, head)
        except Unreadable as exc:
            raise ContentInvalid(
                f"media: {exc}", rule="media.unreadable", provider=network
            ) from None

    def _download(
        self, url: str, part: Path, *, cap: int, network: str, validators: dict[str, str]
    ) -> _Answer:
        deadline = time.monotonic() + self.settings.media_fetch_timeout_s
        # The file as it is: an encoded answer (gzip inside gzip) unpacks before any size check
        # can run, and media are compressed formats already.
        headers = _AS_IT_IS | _conditions(validators)
        try:
            with self._http().stream("GET", url, headers=headers) as response:
                if validators and response.status_code == 304:
                    return _Answer(unchanged=True, validators=validators)
                self._check_answer(response, cap, network)
                make_room(
                    self.folder,
                    cap,
                    self.settings.media_cache_max_bytes,
                    stale_after_s=_longest_run_s(self.settings),
                )
                written = 0
                with open(part, "wb") as out:
                    for block in response.iter_bytes(CHUNK):
                        written += len(block)
                        if written > cap:
                            raise _too_large(network, cap)
                        if time.monotonic() > deadline:
                            raise MediaUnavailable(
                                "media: the fetch took longer than "
                                f"{self.settings.media_fetch_timeout_s:g} s",
                                provider=network,
                            )
                        out.write(block)
                return _Answer(unchanged=False, validators=_validators(response))
        except outbound.DestinationRefused as exc:
            raise ContentInvalid(
                f"media URL refused: {exc.reason}",
                rule="media.destination_refused",
                provider=network,
            ) from None
        except httpx.InvalidURL:
            raise ContentInvalid(
                "media URL is not a valid URL", rule="media.bad_url", provider=network
            ) from None
        except httpx.TooManyRedirects:
            raise ContentInvalid(
                "media URL redirects too many times", rule="media.redirects", provider=network
            ) from None
        except httpx.HTTPError as exc:
            raise MediaUnavailable(
                f"media host unreachable: {type(exc).__name__}", provider=network
            ) from None
        except OSError as exc:  # the cache's disk (full, unwritable): try again later
            raise MediaUnavailable(
                f"media cache unwritable: {exc.strerror or type(exc).__name__}", provider=network
            ) from None

    def _check_answer(self, response: httpx.Response, cap: int, network: str) -> None:
        status = response.status_code
        if status >= 500 or status in (408, 425, 429):
            raise MediaUnavailable(
                f"media host answered HTTP {status}", provider=network, http_status=None
            )
        if status != 200:
            raise ContentInvalid(
                f"media URL answered HTTP {status}", rule="media.unreachable", provider=network
            )
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise ContentInvalid(
                f"media host sent the file encoded ({encoding[:50]}) although asked for it as it "
                "is: Herald does not unpack media answers",
                rule="media.encoded",
                provider=network,
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large(network, cap)


def _longest_run_s(settings: Settings) -> float:
    """Twice the longest a run may hold a file or a download: past that, its process died."""
    return 2 * max(
        settings.publishing_timeout_s, settings.media_fetch_timeout_s, settings.task_time_limit_s
    )


def _too_large(network: str, cap: int) -> ContentInvalid:
    return ContentInvalid(
        f"the media file is larger than {network} accepts; the limit is {size_text(cap)}",
        rule=f"{network}.media_size",
        provider=network,
    )
