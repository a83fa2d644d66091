"""How large a message may be, bounded before anything reads it.

A task message Herald accepts is small: the largest (``herald.posts.schedule``, a post with its
media) stays well under a megabyte. A producer may still send far more, and two doors let it in
before the consumer's inspection (:mod:`.inspection`) can refuse it:

- kombu decompresses a body that carries a ``compression`` header (zlib, bzip2, lzma) while it
  makes the message: a few kilobytes can unpack into gigabytes and take the worker with them.
  :func:`bound_decompression` replaces kombu's decoders with ones that stop at
  :data:`MAX_BODY_BYTES` (and refuses any other compression); the body then fails to decode and
  is refused like any undecodable one, as a dead letter.
- kombu's Redis transport parses a whole queue item as JSON: :mod:`.redis` refuses an item
  over :data:`MAX_ENVELOPE_BYTES` before parsing it.

An uncompressed body over :data:`MAX_BODY_BYTES` is refused by the inspection before it is
decoded. Every refusal names the size and the bound.

How long a message may wait is bounded too: a worker holds a message with an ``eta`` in memory
until it is due (and on Redis, one held past the visibility timeout is delivered again), so
the inspection refuses one due more than :data:`MAX_ETA_AHEAD_S` ahead. Herald's own delays are
far shorter (a retry's backoff, at most five minutes; the dispatcher's lookahead, seconds): a
post waits for its time in the database, by its ``scheduled_at``.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any, cast

import kombu.compression

#: The largest body, after decompression, a task message may have.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The largest Redis queue item: the body in base64 (a third larger) with its headers.
MAX_ENVELOPE_BYTES = 2 * MAX_BODY_BYTES


#: The furthest ahead a message's ``eta`` may be (Herald's own countdowns stay within it).
MAX_ETA_AHEAD_S = 900


class BodyRefused(ValueError):
    """A compressed body Herald does not unpack: too large, truncated, or an unknown codec."""


def too_large(size: int, what: str, bound: int) -> str:
    return f"{what} is {size} bytes, more than the {bound} bytes Herald accepts"


def _bounded(make: Callable[[], Any], name: str) -> Callable[[bytes], bytes]:
    def decompress(body: bytes) -> bytes:
        decompressor = make()
        unpacked: bytes = decompressor.decompress(body, MAX_BODY_BYTES + 1)
        if len(unpacked) > MAX_BODY_BYTES:
            raise BodyRefused(
                f"the {name} body ({len(body)} bytes) unpacks into more than the "
                f"{MAX_BODY_BYTES} bytes Herald accepts"
            )
        if not decompressor.eof:
            raise BodyRefused(f"the {name} body ({len(body)} bytes) is truncated")
        return unpacked

    return decompress


def _refused(content_type: str) -> Callable[[bytes], bytes]:
    def decompress(body: bytes) -> bytes:
        raise BodyRefused(f"compression {content_type!r} is not accepted (zlib, bzip2, lzma are)")

    return decompress


# kombu's content types for the codecs it registers itself ("application/x-gzip" is zlib's
# format, as kombu compresses it).
_BOUNDED: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": _bounded(zlib.decompressobj, "zlib"),
    "application/x-bz2": _bounded(bz2.BZ2Decompressor, "bzip2"),
    "application/x-lzma": _bounded(lzma.LZMADecompressor, "lzma"),
}


def bound_decompression() -> None:
    """Make every decoder in kombu's registry bounded (or refusing); safe to call again."""
    for content_type in kombu.compression.encoders():
        # (encoder, content type), whatever kombu's stubs say
        encoder, _ = cast(
            tuple[Callable[[bytes], bytes], str], kombu.compression.get_encoder(content_type)
        )
        decoder = _BOUNDED.get(content_type) or _refused(content_type)
        kombu.compression.register(encoder, decoder, content_type)
