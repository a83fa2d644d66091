"""Fetch a media URL to disk, safely (docs/media.md).

- Through the SSRF-safe outbound client (:mod:`herald.security.outbound`): http and https
  only, every resolved address and every redirect checked; loopback, private, link-local,
  multicast and metadata addresses refused unless the host is in
  ``HERALD_OUTBOUND_ALLOW_HOSTS``. A refusal is permanent (:class:`ContentInvalid`): the post
  fails with the reason, it is never retried.
- Streamed to a file in a bounded cache (``HERALD_MEDIA_CACHE_DIR``, at most
  ``HERALD_MEDIA_CACHE_MAX_BYTES``; the oldest files go first), never held whole in memory;
  a body over the network's cap for the kind is cut off and refused as soon as it passes
  the cap, and the whole fetch has ``HERALD_MEDIA_FETCH_TIMEOUT_S``.
- The type comes from the bytes (:mod:`.probe`), not from ``Content-Type``.

The host being away (5xx, timeouts, refused connections) is :class:`MediaUnavailable`: the
post is tried again later, and the network's circuit does not count it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
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


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def make_room(folder: Path, wanted: int, budget: int) -> None:
    """Delete the least recently used files until ``wanted`` more bytes fit in ``budget``."""
    files = []
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            stat = entry.stat()
            files.append((stat.st_mtime, stat.st_size, entry))
    total = sum(size for _, size, _ in files)
    for _, size, entry in sorted(files, key=lambda f: f[0]):
        if total + wanted <= budget:
            break
        with contextlib.suppress(OSError):
            entry.unlink()
            total -= size


class Fetcher:
    """Fetches media for one publish attempt, over one outbound client (made on first use,
    closed with :meth:`close` or the ``with`` block). ``resolver`` is for tests only."""

    def __init__(self, settings: Settings, *, resolver: outbound.Resolver | None = None) -> None:
        self.settings = settings
        self._resolver = resolver
        self._client: httpx.Client | None = None

    @functools.cached_property
    def folder(self) -> Path:
        """The media cache (worked out on first use: most posts carry no media)."""
        return Path(self.settings.media_cache_dir or Path(tempfile.gettempdir()) / "herald-media")

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = outbound.client(self.settings, resolver=self._resolver)
        return self._client

    def fetch(self, url: str, *, cap: int, network: str) -> LocalFile:
        """The file at ``url`` on disk, at most ``cap`` bytes (raises the taxonomy's errors)."""
        cap = min(cap, self.settings.media_max_bytes)
        target = self.folder / _key(url)
        if target.exists():
            try:
                os.utime(target)
                found = self._probe(target, network)
            except (OSError, ContentInvalid):
                # Gone meanwhile, or unreadable (kept by an older version): asked again.
                with contextlib.suppress(OSError):
                    target.unlink()
            else:
                if found.size <= cap:
                    return found
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            make_room(self.folder, cap, self.settings.media_cache_max_bytes)
        except OSError as exc:
            raise MediaUnavailable(
                f"media cache unusable: {exc.strerror or type(exc).__name__}", provider=network
            ) from None
        part = self.folder / f"{target.name}.{os.getpid()}.{time.monotonic_ns()}.part"
        try:
            self._download(url, part, cap=cap, network=network)
            # Checked before it is cached: bytes of no known type (a CDN's error page) are
            # refused now and the URL asked again next time, not refused from the cache for
            # every workspace without the host ever being asked.
            found = self._probe(part, network)
            part.replace(target)
        except OSError as exc:  # the cache itself (a file evicted under us, a full disk)
            raise MediaUnavailable(
                f"media cache unusable: {exc.strerror or type(exc).__name__}", provider=network
            ) from None
        finally:
            with contextlib.suppress(OSError):
                part.unlink()
        return dataclasses.replace(found, path=str(target))

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

    def _download(self, url: str, part: Path, *, cap: int, network: str) -> None:
        deadline = time.monotonic() + self.settings.media_fetch_timeout_s
        try:
            # The file as it is: an encoded answer (gzip inside gzip) unpacks before any size
            # check can run, and media are compressed formats already.
            with self._http().stream("GET", url, headers=_AS_IT_IS) as response:
                self._check_answer(response, cap, network)
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


def _too_large(network: str, cap: int) -> ContentInvalid:
    return ContentInvalid(
        f"the media file is larger than {network} accepts; the limit is {size_text(cap)}",
        rule=f"{network}.media_size",
        provider=network,
    )
