"""The sandbox counts lengths with its own code; on every case the networks document, it
agrees with the adapters' counting (herald.providers.text), so neither can drift alone."""

# ruff: noqa: RUF001 - look-alike and wide characters are the point of this corpus
from __future__ import annotations

import pytest

from herald.providers import text as adapters
from herald.providers.mastodon import status_length
from herald.sandbox import counting

CORPUS = [
    "",
    "plain ascii text",
    "café naïve",  # precomposed
    "cafe\u0301",  # combining accent: NFC makes it one code point
    "日本語のテキスト",
    "emoji 😀 and family 👨‍👩‍👧‍👦 and flag 🇫🇷 and keycap 1️⃣",
    "thumbs 👍🏽 heart ❤️ copyright © arrow ↔",
    "see https://example.com/a_(b) and www.example.org.",
    "two links http://a.example/x?y=1, https://b.example/!",
    "dash – quote “x” ‘y’ prime ′ ellipsis …",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP",
    "hello @alice@mastodon.social and @bob, mail a@b.example",  # a remote mention counts @alice
]


@pytest.mark.parametrize("sample", CORPUS)
def test_sandbox_counts_as_the_networks_document(sample: str) -> None:
    assert counting.x_length(sample) == adapters.x_weighted_length(sample)
    assert counting.graphemes(sample) == adapters.grapheme_count(sample)
    assert counting.utf8_bytes(sample) == adapters.utf8_length(sample)
    assert counting.utf16_units(sample) == adapters.utf16_length(sample)
    assert counting.threads_length(sample) == adapters.threads_length(sample)
    for warning in ("", "CW: spoilers 👀"):
        assert counting.mastodon_length(sample, 23, warning) == status_length(sample, 23, warning)


def test_known_weights() -> None:
    # From twitter-text's conformance cases: a URL weighs 23, CJK 2 each, an emoji 2.
    assert counting.x_length("https://example.com/" + "x" * 100) == 23
    assert counting.x_length("日本") == 4
    assert counting.x_length("👨‍👩‍👧‍👦") == 2
    assert counting.mastodon_length("a https://example.com/very/long/path b", 23) == 27
    # Mastodon counts grapheme clusters, the content warning with the text, and a remote
    # mention without its domain (StatusLengthValidator).
    assert counting.mastodon_length("👨‍👩‍👧‍👦" * 3, 23) == 3
    assert counting.mastodon_length("hi @alice@mastodon.social", 23, "CW") == 11
    assert counting.utf16_units("😀") == 2
    assert counting.threads_length("a😀") == 5
