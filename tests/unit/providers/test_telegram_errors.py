"""Telegram's answers mapped into the taxonomy: documented shapes, and any answer at all."""

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
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
)
from herald.providers.telegram import TelegramProvider, classify, public_url
from herald.settings import Settings
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BOT_TOKEN = "123456:AAH-secret-bot-token"


def answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode())


def error(status: int, description: str, **extra: Any) -> httpx.Response:
    return answer(status, {"ok": False, "error_code": status, "description": description, **extra})


def test_429_uses_parameters_retry_after_for_the_reset_time() -> None:
    err = classify(
        error(429, "Too Many Requests: retry after 17", parameters={"retry_after": 17}), now=NOW
    )
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(seconds=17)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (error(401, "Unauthorized"), ReauthRequired),
        (error(404, "Not Found"), ReauthRequired),
        (error(400, "Bad Request: chat not found"), PermanentError),
        (error(400, "Bad Request: message is too long"), PermanentError),
        (error(403, "Forbidden: bot was blocked by the user"), PermanentError),
        (error(502, "Bad Gateway"), AmbiguousOutcome),
        (error(503, "Service Unavailable"), TransientError),
        (httpx.Response(500, content=b"<html>oops</html>"), AmbiguousOutcome),
    ],
)
def test_documented_errors_map_to_one_class(
    response: httpx.Response, expected: type[ProviderError]
) -> None:
    assert type(classify(response, now=NOW)) is expected


def test_group_migration_names_the_new_chat() -> None:
    err = classify(
        error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            parameters={"migrate_to_chat_id": -1001234},
        ),
    )
    assert type(err) is PermanentError
    assert "-1001234" in err.message


def test_public_urls_follow_t_me_rules() -> None:
    assert public_url({"id": -1001, "type": "channel", "username": "news"}, 5) == (
        "https://t.me/news/5"
    )
    assert public_url({"id": -1001234567, "type": "supergroup"}, 9) == "https://t.me/c/1234567/9"
    assert public_url({"id": 42, "type": "private"}, 1) is None
    assert public_url({"id": -42, "type": "group"}, 1) is None


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
shaped = st.fixed_dictionaries(
    {},
    optional={
        "ok": json_values,
        "error_code": json_values,
        "description": json_values,
        "parameters": json_values
        | st.fixed_dictionaries(
            {}, optional={"retry_after": json_values, "migrate_to_chat_id": json_values}
        ),
        "result": json_values
        | st.fixed_dictionaries({}, optional={"message_id": json_values, "chat": json_values}),
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),  # truncated
)
content_types = st.sampled_from(["application/json", "text/html", "text/plain", ""])


@given(st.integers(min_value=100, max_value=599), bodies, content_types)
def test_any_answer_maps_to_exactly_one_error_class(
    status: int, body: bytes, content_type: str
) -> None:
    response = httpx.Response(status, content=body, headers={"content-type": content_type})
    err = classify(response, now=NOW)
    assert_classified(err, status, write_may_duplicate=True)
    if status == 429:
        assert isinstance(err, RateLimited)
        assert err.reset_at >= NOW


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(st.integers(min_value=200, max_value=599), bodies)
def test_publish_returns_a_result_or_raises_a_taxonomy_error_never_anything_else(
    status: int, body: bytes
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    provider = TelegramProvider(
        Settings(env="development", sandbox_url="http://sandbox.invalid"),
        transport=httpx.MockTransport(handler),
    )
    try:
        exc = outcome(
            lambda: provider.publish(PostDraft("hello", "k"), Account("@news"), TokenSet(BOT_TOKEN))
        )
    finally:
        provider.close()
    assert len(seen) == 1  # a write is never repeated inside one call
    if exc is not None:
        assert type(exc) in ERROR_CLASSES
        assert BOT_TOKEN not in str(exc)


def test_a_secret_the_cut_would_split_is_redacted_before_the_message_is_cut() -> None:
    """The network's text is cut to 300 characters; cut first, a quoted secret lost its closing
    quote and no rule recognised what was left of it."""
    description = "x" * 270 + ' {"password": "Zq9secretvalueverylong"}'
    err = classify(error(400, description), now=NOW)
    assert "Zq9" not in err.message
    assert len(err.message) <= 300
