"""Length rules of the networks, as pure functions.

Each network counts text in its own unit, and a post that fits by one unit's count can be
refused by another's. These functions are the single definition every adapter validates
against; none of them does I/O.

- :func:`grapheme_count` user-perceived characters (Bluesky)
- :func:`x_weighted_length` twitter-text v3 weighting (X)
- :func:`utf16_length` UTF-16 code units (Telegram)
- :func:`utf8_length` UTF-8 bytes (Bluesky's byte cap)
- :func:`threads_length` characters, but an emoji counts its UTF-8 bytes (Threads)
- :func:`find_urls` URL spans with character and UTF-8 byte offsets (X, Bluesky facets)
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

_GRAPHEME = regex.compile(r"\X")

# A URL: an explicit http(s) scheme, or a bare host starting with "www.". It must not be
# glued to a preceding word, and stops at whitespace and the characters that never appear
# unescaped in a URL someone types into a post.
_URL = regex.compile(
    r"(?<![\w@#$/.\-])(?:https?://|www\.)[^\s<>\"'`{}|\\^\u00a0\u2000-\u200b\u3000]+",
    regex.IGNORECASE,
)
# Punctuation that ends a sentence rather than the URL it follows.
_TRAILING = ".,;:!?'\"*"
_CLOSERS = {")": "(", "]": "[", "}": "{"}

# twitter-text v3: code points in these ranges weigh 1, everything else 2.
_LIGHT_RANGES: tuple[tuple[int, int], ...] = (
    (0, 4351),
    (8192, 8205),
    (8208, 8223),
    (8242, 8247),
)
X_URL_WEIGHT = 23
X_EMOJI_WEIGHT = 2
X_DEFAULT_WEIGHT = 2

_ZWJ = "\u200d"
_VS16 = "\ufe0f"
_KEYCAP = "\u20e3"
_EMOJI_PRESENTATION = regex.compile(r"\p{Emoji_Presentation}")
_EMOJI = regex.compile(r"\p{Emoji}")
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
_MODIFIER_OR_FLAG = regex.compile(r"[\p{Emoji_Modifier}\p{Regional_Indicator}]")


@dataclass(frozen=True, slots=True)
class UrlSpan:
    """One URL in a text. ``start``/``end`` index the Python string (code points);
    ``byte_start``/``byte_end`` index its UTF-8 encoding. Both are end-exclusive."""

    url: str
    start: int
    end: int
    byte_start: int
    byte_end: int


def graphemes(text: str) -> list[str]:
    """The extended grapheme clusters of ``text`` (Unicode UAX #29)."""
    return list(_GRAPHEME.findall(text))


def grapheme_count(text: str) -> int:
    """User-perceived characters: a flag, a ZWJ family or ``e`` + accent count as one."""
    return sum(1 for _ in _GRAPHEME.finditer(text))


def utf8_length(text: str) -> int:
    """Bytes of the UTF-8 encoding (lone surrogates count as their 3-byte form)."""
    return len(text.encode("utf-8", "surrogatepass"))


def utf16_length(text: str) -> int:
    """UTF-16 code units: characters outside the Basic Multilingual Plane count two."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def is_emoji_cluster(cluster: str) -> bool:
    """Whether one grapheme cluster renders as an emoji.

    True for emoji-presentation characters, text-default pictographs forced to emoji with
    VS16, keycaps, skin-tone modified and ZWJ sequences, and regional-indicator flags.
    """
    if _EMOJI_PRESENTATION.search(cluster) or _MODIFIER_OR_FLAG.search(cluster):
        return True
    if _KEYCAP in cluster:
        return True
    if _VS16 in cluster and _EMOJI.search(cluster):
        return True
    return _ZWJ in cluster and _PICTOGRAPHIC.search(cluster) is not None


def _code_point_weight(ch: str) -> int:
    cp = ord(ch)
    for low, high in _LIGHT_RANGES:
        if low <= cp <= high:
            return 1
    return X_DEFAULT_WEIGHT


def _weigh_plain(text: str) -> int:
    total = 0
    for cluster in _GRAPHEME.findall(text):
        if is_emoji_cluster(cluster):
            total += X_EMOJI_WEIGHT
        else:
            total += sum(_code_point_weight(ch) for ch in cluster)
    return total


def x_weighted_length(text: str) -> int:
    """X's weighted length (twitter-text v3).

    The text is NFC-normalised; each URL weighs 23; an emoji sequence (ZWJ sequences, flags,
    keycaps and skin tones included) weighs 2 in total; any other code point weighs 1 inside
    the light ranges (Latin and most scripts below U+1100, some punctuation) and 2 outside.
    """
    text = unicodedata.normalize("NFC", text)
    total = 0
    cursor = 0
    for span in find_urls(text):
        total += _weigh_plain(text[cursor : span.start]) + X_URL_WEIGHT
        cursor = span.end
    return total + _weigh_plain(text[cursor:])


def threads_length(text: str) -> int:
    """Threads' count: one per code point, except that an emoji counts its UTF-8 bytes."""
    total = 0
    for cluster in _GRAPHEME.findall(text):
        total += utf8_length(cluster) if is_emoji_cluster(cluster) else len(cluster)
    return total


def _trim(url: str) -> str:
    """Drop trailing sentence punctuation and unbalanced closing brackets."""
    while url:
        last = url[-1]
        unbalanced = last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last])
        if last in _TRAILING or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def find_urls(text: str) -> list[UrlSpan]:
    """Every URL in ``text``, in order, with code-point and UTF-8 byte offsets.

    ``text.encode()[span.byte_start:span.byte_end].decode() == span.url`` holds, which is
    what Bluesky's link facets need.
    """
    spans: list[UrlSpan] = []
    byte_cursor = 0
    char_cursor = 0
    for match in _URL.finditer(text):
        url = _trim(match.group(0))
        if len(url) <= len("www.") or url.lower().rstrip("/").endswith("://"):
            continue
        start = match.start()
        end = start + len(url)
        byte_start = byte_cursor + utf8_length(text[char_cursor:start])
        byte_end = byte_start + utf8_length(url)
        spans.append(UrlSpan(url, start, end, byte_start, byte_end))
        byte_cursor, char_cursor = byte_end, end
    return spans
