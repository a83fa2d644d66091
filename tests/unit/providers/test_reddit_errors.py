"""Reddit's answers mapped into the taxonomy, including the errors inside an HTTP 200."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.providers.base import (
    ERROR_CLASSES,
    Account,
    AmbiguousOutcome,
    AuthExpired,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
)
from herald.providers.reddit import RedditProvider, classify, submission_error, wait_seconds
from herald.settings import Settings
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = Account("alice", settings={"subreddit": "test"})
DRAFT = PostDraft("body", "k", settings={"title": "Title"})


def test_ratelimit_inside_a_200_parses_the_wait() -> None:
    message = "Looks like you've been doing that a lot. Take a break for 7 minutes before trying."
    err = submission_error([["RATELIMIT", message, "ratelimit"]], now=NOW)
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(minutes=7)


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Take a break for 1 minute before trying again.", 60),
        ("you are doing that too much. try again in 9 seconds.", 9),
        ("try again in 500 milliseconds", 0.5),
        ("try again later", 600),
    ],
)
def test_wait_seconds_reads_the_unit(message: str, seconds: float) -> None:
    assert wait_seconds(message) == seconds


def test_other_submission_errors_are_permanent_with_the_code() -> None:
    err = submission_error([["SUBREDDIT_NOEXIST", "that subreddit doesn't exist", "sr"]])
    assert type(err) is PermanentError
    assert err.provider_code == "SUBREDDIT_NOEXIST"
    assert "sr" in err.message


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (401, {"WWW-Authenticate": 'Bearer realm="reddit", error="invalid_token"'}, AuthExpired),
        (
            403,
            {"WWW-Authenticate": 'Bearer realm="reddit", error="insufficient_scope"'},
            ReauthRequired,
        ),
        (403, {}, PermanentError),
        (429, {"X-Ratelimit-Reset": "42"}, RateLimited),
        (500, {}, AmbiguousOutcome),
        (503, {}, TransientError),
        (404, {}, PermanentError),
    ],
)
def test_http_errors_map_to_one_class(
    status: int, headers: dict[str, str], expected: type[ProviderError]
) -> None:
    response = httpx.Response(status, json={"message": "x", "error": status}, headers=headers)
    assert type(classify(response, now=NOW)) is expected


def test_429_reset_comes_from_x_ratelimit_reset_seconds() -> None:
    err = classify(httpx.Response(429, headers={"X-Ratelimit-Reset": "42"}), now=NOW)
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(seconds=42)


# ------------------------------------------------------------------------------ properties


def outcome(call: Callable[[], object]) -> ProviderError | None:
    """The taxonomy error a call raised, or None; anything else propagates and fails."""
    try:
        call()
    except ProviderError as exc:
        return exc
    return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
triples = st.lists(
    st.lists(st.sampled_from(["RATELIMIT", "TOO_LONG", "NO_SELFS"]) | json_values, max_size=4)
    | json_values,
    max_size=3,
)
shaped = st.builds(
    lambda errors, data: {"json": {"errors": errors, "data": data}},
    triples,
    json_values | st.fixed_dictionaries({}, optional={"id": json_values, "url": json_values}),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()[:11]),
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(
    st.integers(min_value=100, max_value=599),
    bodies,
    st.dictionaries(st.sampled_from(["X-Ratelimit-Reset", "WWW-Authenticate"]), header_values),
)
def test_any_answer_maps_to_exactly_one_error_class(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    err = classify(httpx.Response(status, content=body, headers=headers), now=NOW)
    assert_classified(err, status, write_may_duplicate=True)


@given(triples)
def test_any_errors_array_maps_to_exactly_one_error_class(errors: list[Any]) -> None:
    assert type(submission_error(errors, now=NOW)) in ERROR_CLASSES


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(st.integers(min_value=200, max_value=499), bodies)
def test_publish_and_refresh_never_raise_outside_the_taxonomy(status: int, body: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    provider = RedditProvider(
        Settings(env="development", sandbox_url="http://sandbox.invalid"),
        transport=httpx.MockTransport(handler),
    )
    tokens = TokenSet("access-secret", "refresh-secret")
    try:
        errors = [
            outcome(lambda: provider.publish(DRAFT, ACCOUNT, tokens)),
            outcome(lambda: provider.refresh(ACCOUNT, tokens)),
        ]
    finally:
        provider.close()
    assert len(seen) == 2
    for exc in errors:
        if exc is not None:
            assert type(exc) in ERROR_CLASSES
            assert "secret" not in str(exc)
