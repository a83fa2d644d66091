"""The networks' length rules: known values from the networks' documentation, and properties
that must hold for any text."""

from __future__ import annotations

import unicodedata

import pytest
import regex
from hypothesis import example, given
from hypothesis import strategies as st

from herald.providers.text import (
    find_urls,
    grapheme_count,
    is_emoji_cluster,
    threads_length,
    utf8_length,
    utf16_length,
    x_weighted_length,
)

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👨‍👩‍👧‍👦
FLAG = "\U0001f1eb\U0001f1f7"  # 🇫🇷
THUMB_TONE = "\U0001f44d\U0001f3fd"  # 👍🏽
KEYCAP = "1\ufe0f\u20e3"  # 1️⃣


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", 5),
        ("é", 1),  # one code point after NFC
        ("e\u0301", 1),  # NFC composes e + combining acute into é
        ("日本語", 6),  # CJK weighs 2
        ("\u2014", 1),  # em dash: inside 8208-8223
        ("\u2030", 2),  # per mille: outside the light ranges
        (FAMILY, 2),  # a ZWJ sequence weighs 2 in total
        (FLAG, 2),
        (THUMB_TONE, 2),
        (KEYCAP, 2),
        ("see https://example.com/a/very/long/path?x=1", 4 + 23),
        ("www.example.com and http://a.io", 23 + 5 + 23),
    ],
)
def test_x_weighted_length_matches_twitter_text_rules(text: str, expected: int) -> None:
    assert x_weighted_length(text) == expected


def test_x_limit_boundary_with_cjk_and_urls() -> None:
    assert x_weighted_length("あ" * 140) == 280
    assert x_weighted_length("a" * 256 + " https://example.com/" + "p" * 300) == 280


@pytest.mark.parametrize(
    ("text", "graphemes", "utf16", "utf8"),
    [
        ("abc", 3, 3, 3),
        (FAMILY, 1, 11, 25),
        (FLAG, 1, 4, 8),
        ("e\u0301", 1, 2, 3),
        ("\U0001d11e", 1, 2, 4),  # musical G clef, outside the BMP
    ],
)
def test_unit_counts(text: str, graphemes: int, utf16: int, utf8: int) -> None:
    assert grapheme_count(text) == graphemes
    assert utf16_length(text) == utf16
    assert utf8_length(text) == utf8


def test_threads_counts_emoji_by_their_utf8_bytes() -> None:
    assert threads_length("hello") == 5
    assert threads_length("héllo") == 5
    assert threads_length("\U0001f600") == 4  # 😀
    assert threads_length(FAMILY) == 25
    assert threads_length("ok " + FLAG) == 3 + 8


def test_emoji_cluster_detection() -> None:
    for emoji in ("\U0001f600", FAMILY, FLAG, THUMB_TONE, KEYCAP, "\u2764\ufe0f"):
        assert is_emoji_cluster(emoji), emoji
    for plain in ("a", "é", "1", "#", "日", "\u00a9"):  # © without VS16 is text
        assert not is_emoji_cluster(plain), plain


def test_find_urls_trims_sentence_punctuation_but_keeps_balanced_parens() -> None:
    spans = find_urls("Read https://en.wikipedia.org/wiki/Foo_(bar), then (see http://x.io/a).")
    assert [s.url for s in spans] == ["https://en.wikipedia.org/wiki/Foo_(bar)", "http://x.io/a"]


def test_trailing_question_mark_is_text_not_url() -> None:
    assert x_weighted_length("http://a.com/?") == 23 + 1


def test_find_urls_ignores_words_glued_to_a_scheme_and_bare_schemes() -> None:
    assert find_urls("foohttps://example.com") == []
    assert find_urls("just http:// here") == []
    assert find_urls("email me@www.example.com") == []


def test_find_urls_gives_byte_offsets_after_multibyte_text() -> None:
    text = f"{FAMILY} café → https://bsky.app/profile/x ok"
    (span,) = find_urls(text)
    encoded = text.encode()
    assert encoded[span.byte_start : span.byte_end].decode() == "https://bsky.app/profile/x"
    assert text[span.start : span.end] == span.url
    assert span.byte_start == len(text[: span.start].encode())


# ------------------------------------------------------------------------------ properties

# Text with no URL-like content and no emoji: letters, marks, digits, punctuation, spaces.
plain_text = st.text(
    alphabet=st.characters(
        categories=("L", "M", "N", "P", "Zs"),
        exclude_characters="/:.@#",
    ),
    max_size=200,
).filter(lambda t: not any(is_emoji_cluster(c) for c in regex.findall(r"\X", t)))

url = st.builds(
    lambda scheme, host, tld, path: f"{scheme}://{host}.{tld}/{path}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    st.sampled_from(["com", "org", "io", "co.uk"]),
    # A trailing "?" or "!" ends the sentence, not the URL: keep the last character plain.
    st.from_regex(r"([A-Za-z0-9_~%=&?!-]{0,60}[A-Za-z0-9/])?", fullmatch=True),
)


@given(plain_text)
def test_weighted_length_is_at_least_the_nfc_code_points(text: str) -> None:
    assert x_weighted_length(text) >= len(unicodedata.normalize("NFC", text))


@given(plain_text, url)
@example("", "https://example.com/")
@example("so", "http://a.com/?q=1")
def test_adding_a_url_adds_exactly_23_plus_the_separator(text: str, link: str) -> None:
    assert x_weighted_length(f"{text} {link}") == x_weighted_length(text) + 1 + 23


@given(st.text(max_size=300))
def test_graphemes_never_exceed_code_points_nor_utf16_units(text: str) -> None:
    assert grapheme_count(text) <= len(text) <= utf16_length(text) <= utf8_length(text)


@given(st.text(max_size=300))
def test_threads_length_lies_between_code_points_and_bytes(text: str) -> None:
    assert grapheme_count(text) <= threads_length(text) <= max(len(text), utf8_length(text))


@given(st.lists(st.tuples(st.text(max_size=30), url), max_size=5), st.text(max_size=30))
def test_every_url_is_found_and_its_byte_offsets_slice_back_to_it(
    parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{prefix} {link} " for prefix, link in parts) + tail
    encoded = text.encode("utf-8", "surrogatepass")
    spans = find_urls(text)
    for span in spans:
        assert text[span.start : span.end] == span.url
        assert encoded[span.byte_start : span.byte_end].decode("utf-8", "surrogatepass") == (
            span.url
        )
    found = [s.url for s in spans]
    for _, link in parts:
        assert any(link.rstrip(".,;:!?'\"*") in f for f in found)
