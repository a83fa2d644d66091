"""How each emulated network counts the length of a text — the sandbox's own code.

The adapters validate against :mod:`herald.providers.text`; the sandbox must not reuse it,
or a counting mistake would hide on both sides (the adapter lets a post through, the fake
network agrees, the real one refuses). These functions are written from the networks'
published rules, in a different way on purpose:

- X: twitter-text v3 configuration (``scale`` 100, ``defaultWeight`` 200, four light
  ranges of weight 100, ``transformedURLLength`` 23, emoji parsing on), NFC first;
- Bluesky: extended grapheme clusters (UAX #29) and UTF-8 bytes;
- Telegram: UTF-16 code units;
- Threads: code points, an emoji counting its UTF-8 bytes;
- Mastodon: the content warning and the text with every URL replaced by
  ``characters_reserved_per_url`` characters and a remote mention ``@user@domain`` by
  ``@user``, in extended grapheme clusters (its ``StatusLengthValidator``).
"""

from __future__ import annotations

import re
import unicodedata

import regex

# twitter-text v3 (config/v3.json): weights are in hundredths of a character.
_SCALE = 100
_DEFAULT_WEIGHT = 200
_RANGES = (
    (0x0000, 0x10FF, 100),
    (0x2000, 0x200D, 100),
    (0x2010, 0x201F, 100),
    (0x2032, 0x2037, 100),
)
_URL_LENGTH = 23

# A URL as a person types it into a post: scheme or "www.", then anything but whitespace.
# Trailing sentence punctuation belongs to the sentence.
_URL = re.compile(r"(?i)(?<![\w/@.#$-])(?:https?://|www\.)\S+")
_URL_TAIL = ".,;:!?'\"*)]}"

_CLUSTER = regex.compile(r"\X")
_EMOJI_CLUSTER = regex.compile(
    r"^(?:\p{Regional_Indicator}{2}"  # a flag
    r"|[0-9#*]\ufe0f?\u20e3"  # a keycap
    r"|\p{Extended_Pictographic}(?:\ufe0f|\p{Emoji_Modifier})?"
    r"(?:\u200d\p{Extended_Pictographic}(?:\ufe0f|\p{Emoji_Modifier})?)*)$"
)


def _is_emoji(cluster: str) -> bool:
    if not _EMOJI_CLUSTER.match(cluster):
        return False
    # A lone text-default pictograph (©, ™, ↔) without VS16 renders as text.
    return len(cluster) > 1 or regex.match(r"\p{Emoji_Presentation}", cluster) is not None


def urls(text: str) -> list[tuple[int, int]]:
    """(start, end) of every URL in ``text``, code-point offsets, end exclusive."""
    found = []
    for match in _URL.finditer(text):
        url = match.group(0)
        while url and url[-1] in _URL_TAIL:
            closer = url[-1]
            opener = {")": "(", "]": "[", "}": "{"}.get(closer)
            if opener and url.count(opener) >= url.count(closer):
                break
            url = url[:-1]
        if len(url) > len("www.") and not url.lower().endswith("://"):
            found.append((match.start(), match.start() + len(url)))
    return found


def _weigh(segment: str) -> int:
    total = 0
    for cluster in _CLUSTER.findall(segment):
        if _is_emoji(cluster):
            total += _DEFAULT_WEIGHT
            continue
        for ch in cluster:
            code = ord(ch)
            total += next((w for lo, hi, w in _RANGES if lo <= code <= hi), _DEFAULT_WEIGHT)
    return total


def x_length(text: str) -> int:
    """X's weighted length, in characters."""
    text = unicodedata.normalize("NFC", text)
    weight, cursor = 0, 0
    for start, end in urls(text):
        weight += _weigh(text[cursor:start]) + _URL_LENGTH * _SCALE
        cursor = end
    weight += _weigh(text[cursor:])
    return weight // _SCALE


def graphemes(text: str) -> int:
    return len(_CLUSTER.findall(text))


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def threads_length(text: str) -> int:
    return sum(
        utf8_bytes(cluster) if _is_emoji(cluster) else len(cluster)
        for cluster in _CLUSTER.findall(text)
    )


_MASTODON_MENTION = regex.compile(
    r"(?i)(?<![=/\w])@([a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?:@[\w.-]+\w)?"
)


def mastodon_length(text: str, per_url: int, spoiler_text: str = "") -> int:
    countable = text
    for start, end in reversed(urls(text)):
        countable = countable[:start] + "x" * per_url + countable[end:]
    countable = _MASTODON_MENTION.sub(r"@\1", countable)
    return len(_CLUSTER.findall(spoiler_text + countable))
