"""What a fetched file is, from its bytes: type sniffed with ``filetype`` (the
``Content-Type`` header is never trusted), image dimensions with Pillow (which reads the
header only), and an MP4/QuickTime video's duration from its ``mvhd`` box.

No maintained pure-Python reader of video containers installs without a native library here
(``pymediainfo`` needs libmediainfo), so :func:`mp4_duration` walks the ISO-BMFF boxes
itself: top-level ``moov``, then its ``mvhd`` (ISO/IEC 14496-12 §8.2.2: version 0 has 32-bit
times, version 1 64-bit; duration / timescale is the length in seconds). It seeks from box
to box, so a 500 MB file costs a few reads.
"""

from __future__ import annotations

import struct
import warnings
from typing import BinaryIO

import filetype
from PIL import Image

from herald.providers.base import LocalFile


class Unreadable(ValueError):
    """The bytes are not a file Herald can publish (unknown type, corrupt header)."""


def sniff(head: bytes) -> str | None:
    kind = filetype.guess(head)
    return kind.mime if kind is not None else None


def probe(path: str, size: int, head: bytes) -> LocalFile:
    mime = sniff(head)
    if mime is None:
        raise Unreadable("the file's type could not be recognised from its bytes")
    width = height = None
    duration = None
    if mime.startswith("image/"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
            raise Unreadable(f"the image cannot be read: {type(exc).__name__}") from None
    elif mime in ("video/mp4", "video/quicktime"):
        with open(path, "rb") as handle:
            duration = mp4_duration(handle, size)
    return LocalFile(path, size, mime, width, height, duration)


def _boxes(handle: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes between ``start`` and ``end``."""
    found: list[tuple[bytes, int, int]] = []
    offset = start
    while offset + 8 <= end and len(found) < 1000:
        handle.seek(offset)
        header = handle.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        payload = offset + 8
        if length == 1:
            large = handle.read(8)
            if len(large) < 8:
                break
            length = struct.unpack(">Q", large)[0]
            payload += 8
        elif length == 0:
            length = end - offset
        if length < payload - offset:
            break
        found.append((kind, payload, offset + length))
        offset += length
    return found


def mp4_duration(handle: BinaryIO, size: int) -> float | None:
    """Seconds, from ``moov/mvhd``; None when the file has no readable one."""
    for kind, payload, end in _boxes(handle, 0, size):
        if kind != b"moov":
            continue
        for inner, body, _ in _boxes(handle, payload, end):
            if inner != b"mvhd":
                continue
            handle.seek(body)
            data = handle.read(32)
            if not data:
                return None
            if data[0] == 1 and len(data) >= 28:
                timescale, duration = struct.unpack(">IQ", data[20:32])
            elif len(data) >= 20:
                timescale, duration = struct.unpack(">II", data[12:20])
            else:
                return None
            return duration / timescale if timescale else None
    return None
