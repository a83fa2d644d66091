"""Threads' Graph errors mapped into the taxonomy: documented codes, and any answer at all."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
from herald.providers.threads import ThreadsProvider, classify
from herald.settings import Settings
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def graph(status: int, code: int, message: str = "boom") -> httpx.Response:
    body = {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "trace-1",
        }
    }
    return httpx.Response(status, content=json.dumps(body).encode())


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (190, AuthExpired),
        (4, RateLimited),
        (17, RateLimited),
        (341, RateLimited),
        (1, TransientError),
        (2, TransientError),
        (100, PermanentError),
        (10, PermanentError),
        (200, PermanentError),
    ],
)
def test_graph_code_decides_the_class_whatever_the_status(
    code: int, expected: type[ProviderError]
) -> None:
    for status in (400, 403, 500):
        err = classify(graph(status, code), now=NOW)
        assert type(err) is expected, status
        assert err.provider_code == str(code)
        assert err.request_id == "trace-1"


def test_expired_token_during_refresh_means_reconnect() -> None:
    assert type(classify(graph(400, 190), refreshing=True)) is ReauthRequired


def test_throttling_without_headers_backs_off_a_default_time() -> None:
    err = classify(graph(400, 4), now=NOW)
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(401, content=b"nope"), AuthExpired),
        (httpx.Response(429, content=b""), RateLimited),
        (httpx.Response(502, content=b"<html>"), AmbiguousOutcome),
        (httpx.Response(503, content=b"<html>"), TransientError),
        (httpx.Response(404, content=b"{}"), PermanentError),
    ],
)
def test_without_a_graph_body_the_status_decides(
    response: httpx.Response, expected: type[ProviderError]
) -> None:
    assert type(classify(response, now=NOW)) is expected


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
graph_error = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from([1, 2, 4, 10, 17, 100, 190, 341, 9007]) | json_values,
        "message": json_values,
        "error_user_msg": json_values,
        "fbtrace_id": json_values,
    },
)
shaped = st.one_of(
    st.builds(lambda e: {"error": e}, graph_error | json_values),
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "status": st.sampled_from(["FINISHED", "PUBLISHED", "EXPIRED", "ERROR", "IN_PROGRESS"])
            | json_values,
            "data": json_values,
            "permalink": json_values,
        },
    ),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()[:9]),
)


@given(st.integers(min_value=100, max_value=599), bodies, st.booleans(), st.booleans())
def test_any_answer_maps_to_exactly_one_error_class(
    status: int, body: bytes, idempotent: bool, refreshing: bool
) -> None:
    err = classify(
        httpx.Response(status, content=body), idempotent=idempotent, refreshing=refreshing, now=NOW
    )
    assert_classified(err, status, write_may_duplicate=not idempotent)
    if isinstance(err, RateLimited):
        assert NOW <= err.reset_at <= NOW + timedelta(days=1)


# 5xx on reads is retried with real back-off inside ProviderHTTP; those paths are pinned
# against the sandbox instead, to keep this property fast.
answers = st.tuples(st.integers(min_value=200, max_value=499), bodies)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=40, deadline=None)
@given(st.lists(answers, min_size=1, max_size=6))
def test_publish_never_raises_outside_the_taxonomy(script: list[tuple[int, bytes]]) -> None:
    replies = itertools.cycle(script)

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = next(replies)
        return httpx.Response(status, content=body)

    provider = ThreadsProvider(
        Settings(env="development", sandbox_url="http://sandbox.invalid"),
        transport=httpx.MockTransport(handler),
        processing_polls=2,
        processing_poll_s=0,
    )
    tokens = TokenSet("threads-secret-token")
    account = Account("1789")
    try:
        errors = [
            outcome(lambda: provider.publish(PostDraft("hello", "k"), account, tokens)),
            outcome(lambda: provider.publish(PostDraft("", "k"), account, tokens)),
            outcome(lambda: provider.refresh(account, tokens)),
        ]
    finally:
        provider.close()
    for exc in errors:
        if exc is not None:
            assert type(exc) in ERROR_CLASSES
            assert "threads-secret-token" not in str(exc)
