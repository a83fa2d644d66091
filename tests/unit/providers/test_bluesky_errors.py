"""Bluesky: error mapping, TID record keys, link facets with UTF-8 byte offsets."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.providers.base import (
    AuthExpired,
    ContentInvalid,
    PermanentError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.bluesky import classify, link_facets, tid_for
from tests.fixtures.sandbox import error_bodies, header_maps, statuses
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


@given(statuses, header_maps, error_bodies, st.booleans())
def test_any_answer_maps_to_exactly_one_class(
    status: int, headers: dict[str, str], body: Any, session: bool
) -> None:
    error = classify(status, headers, body, session=session, now=NOW)
    # A Bluesky record's key is derived from the idempotency key: a resend cannot post twice.
    assert_classified(error, status, write_may_duplicate=False)
    assert type(error) is not ContentInvalid


@pytest.mark.parametrize(
    ("status", "body", "session", "expected"),
    [
        (400, {"error": "ExpiredToken", "message": "Token has expired"}, False, AuthExpired),
        (400, {"error": "InvalidToken"}, False, AuthExpired),
        (400, {"error": "ExpiredToken", "message": "Token has been revoked"}, True, ReauthRequired),
        (401, {"error": "AuthenticationRequired"}, True, ReauthRequired),
        (400, {"error": "InvalidRequest", "message": "too long"}, False, PermanentError),
        (413, {"error": "PayloadTooLarge"}, False, PermanentError),
        (500, {"error": "InternalServerError"}, False, TransientError),
    ],
)
def test_mapping_table(status: int, body: Any, session: bool, expected: type) -> None:
    assert type(classify(status, {}, body, session=session, now=NOW)) is expected


def test_rate_limit_reset_is_epoch_seconds() -> None:
    error = classify(
        429, {"ratelimit-reset": "1767225900"}, {"error": "RateLimitExceeded"}, now=NOW
    )
    assert isinstance(error, RateLimited)
    assert error.reset_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


@given(st.text(min_size=1, max_size=80))
def test_rkey_is_a_valid_tid_that_depends_only_on_the_key(key: str) -> None:
    assert TID.match(tid_for(key))
    assert tid_for(key) == tid_for(key)


def test_different_keys_give_different_rkeys() -> None:
    assert len({tid_for(f"post-{i}") for i in range(2000)}) == 2000


words = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=" \n\t"), max_size=8
)


@given(
    st.lists(
        st.one_of(words, st.just("https://example.com/päth"), st.just("www.herald.dev")), max_size=8
    )
)
def test_link_facets_slice_the_utf8_bytes_of_each_url(parts: list[str]) -> None:
    text = " ".join(parts)
    raw = text.encode()
    for facet in link_facets(text):
        start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
        uri = facet["features"][0]["uri"]
        assert raw[start:end].decode() in (uri, uri.removeprefix("https://"))
