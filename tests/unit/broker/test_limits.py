"""kombu's decompression, bounded: what unpacks past the bound, is truncated or uses a codec
Herald does not know fails to decode (and is refused as a dead letter by the consumer)."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable

import kombu.compression
import pytest

from herald.broker.limits import MAX_BODY_BYTES, BodyRefused, bound_decompression

CODECS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("zlib", zlib.compress),
    ("bzip2", bz2.compress),
    ("xz", lzma.compress),
]


@pytest.fixture(autouse=True)
def _bounded() -> None:
    bound_decompression()


@pytest.mark.parametrize(("alias", "compress"), CODECS)
def test_a_body_up_to_the_bound_unpacks_as_before(
    alias: str, compress: Callable[[bytes], bytes]
) -> None:
    small = b'[[], {"post_id": "x"}, {}]'
    assert kombu.compression.decompress(compress(small), alias) == small
    whole = b"x" * MAX_BODY_BYTES
    assert kombu.compression.decompress(compress(whole), alias) == whole


@pytest.mark.parametrize(("alias", "compress"), CODECS)
def test_decompression_stops_at_the_bound(alias: str, compress: Callable[[bytes], bytes]) -> None:
    bomb = compress(b" " * (8 * MAX_BODY_BYTES))
    assert len(bomb) < MAX_BODY_BYTES // 100  # a few kilobytes
    with pytest.raises(BodyRefused, match="unpacks into more than"):
        kombu.compression.decompress(bomb, alias)


@pytest.mark.parametrize(("alias", "compress"), CODECS)
def test_a_truncated_body_is_refused(alias: str, compress: Callable[[bytes], bytes]) -> None:
    with pytest.raises((BodyRefused, zlib.error, OSError, EOFError, lzma.LZMAError)):
        kombu.compression.decompress(compress(b'[[], {"post_id": "x"}, {}]')[:-4], alias)


def test_a_codec_registered_later_is_refused_until_bounded() -> None:
    kombu.compression.register(lambda b: b, lambda b: b, "application/x-herald-test")
    bound_decompression()
    with pytest.raises(BodyRefused, match="is not accepted"):
        kombu.compression.decompress(b"anything", "application/x-herald-test")
