"""Discord's answers mapped into the taxonomy: documented shapes, and any answer at all."""

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
from herald.providers.discord import (
    DiscordProvider,
    classify,
    classify_token_error,
    form_errors,
    nonce_for,
)
from herald.settings import Settings
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WEBHOOK_TOKEN = "whk-secret-token-value"
WEBHOOK = Account("111", settings={"channel_id": "222", "guild_id": "333"})
BOT = Account("222", settings={"mode": "bot", "guild_id": "333"})


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def test_429_prefers_the_body_retry_after_float() -> None:
    response = answer(
        429,
        {"message": "You are being rate limited.", "retry_after": 1.25, "global": False},
        {"Retry-After": "2", "X-RateLimit-Reset-After": "3.5"},
    )
    err = classify(response, now=NOW)
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(seconds=1.25)


def test_429_without_a_body_falls_back_to_the_headers() -> None:
    response = httpx.Response(429, headers={"X-RateLimit-Reset-After": "3.5"})
    err = classify(response, now=NOW)
    assert isinstance(err, RateLimited)
    assert err.reset_at == NOW + timedelta(seconds=3.5)


def test_invalid_form_body_lists_the_nested_field_messages() -> None:
    body = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "content": {
                "_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]
            }
        },
    }
    err = classify(answer(400, body))
    assert type(err) is PermanentError
    assert err.provider_code == "50035"
    assert "content: Must be 2000 or fewer in length." in err.message


def test_form_errors_walks_nested_arrays_of_fields() -> None:
    errors = {"embeds": {"0": {"title": {"_errors": [{"code": "X", "message": "too long"}]}}}}
    assert list(form_errors(errors)) == ["embeds.0.title: too long"]


@pytest.mark.parametrize(
    ("response", "mode", "expected"),
    [
        (
            answer(401, {"message": "Invalid Webhook Token", "code": 50027}),
            "webhook",
            ReauthRequired,
        ),
        (answer(401, {"message": "401: Unauthorized", "code": 0}), "bot", ReauthRequired),
        (answer(404, {"message": "Unknown Webhook", "code": 10015}), "webhook", ReauthRequired),
        (answer(404, {"message": "Unknown Channel", "code": 10003}), "bot", PermanentError),
        (answer(403, {"message": "Missing Permissions", "code": 50013}), "bot", PermanentError),
        (
            answer(413, {"message": "Request entity too large", "code": 40005}),
            "bot",
            PermanentError,
        ),
        (answer(502, {"message": "Bad Gateway"}), "webhook", AmbiguousOutcome),
        (answer(502, {"message": "Bad Gateway"}), "bot", TransientError),  # nonce: safe
        (answer(503, {"message": "Unavailable"}), "webhook", TransientError),
    ],
)
def test_documented_errors_map_to_one_class(
    response: httpx.Response, mode: Any, expected: type[ProviderError]
) -> None:
    assert type(classify(response, mode=mode, now=NOW)) is expected


def test_token_endpoint_invalid_grant_means_reconnect() -> None:
    err = classify_token_error(answer(400, {"error": "invalid_grant"}))
    assert type(err) is ReauthRequired


def test_nonce_is_stable_and_fits_discords_limit() -> None:
    assert nonce_for("post-1") == nonce_for("post-1") != nonce_for("post-2")
    assert len(nonce_for("x" * 500)) == 25


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
        "id": json_values,
        "code": json_values,
        "message": json_values,
        "errors": json_values,
        "retry_after": json_values,
        "channel_id": json_values,
        "access_token": json_values,
        "refresh_token": json_values,
        "expires_in": json_values,
        "error": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()[:7]),
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
headers = st.dictionaries(
    st.sampled_from(
        ["Retry-After", "X-RateLimit-Reset-After", "X-RateLimit-Reset", "Content-Type"]
    ),
    header_values,
)


@given(
    st.integers(min_value=100, max_value=599), bodies, headers, st.sampled_from(["webhook", "bot"])
)
def test_any_answer_maps_to_exactly_one_error_class(
    status: int, body: bytes, head: dict[str, str], mode: Any
) -> None:
    err = classify(httpx.Response(status, content=body, headers=head), mode=mode, now=NOW)
    # A bot message carries an enforced nonce; a webhook message has nothing to de-duplicate it.
    assert_classified(err, status, write_may_duplicate=mode == "webhook")
    if status == 429:
        assert isinstance(err, RateLimited)
        assert NOW <= err.reset_at <= NOW + timedelta(days=1)
    assert type(classify_token_error(httpx.Response(status, content=body))) in ERROR_CLASSES


def provider_answering(status: int, body: bytes, seen: list[httpx.Request]) -> DiscordProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return DiscordProvider(
        Settings(env="development", sandbox_url="http://sandbox.invalid"),
        transport=httpx.MockTransport(handler),
    )


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(st.integers(min_value=200, max_value=499), bodies)
def test_publish_and_refresh_never_raise_outside_the_taxonomy(status: int, body: bytes) -> None:
    seen: list[httpx.Request] = []
    provider = provider_answering(status, body, seen)
    tokens = TokenSet(WEBHOOK_TOKEN, "refresh-secret")
    try:
        errors = [
            outcome(lambda: provider.publish(PostDraft("hello", "k"), WEBHOOK, tokens)),
            outcome(lambda: provider.publish(PostDraft("hello", "k"), BOT, tokens)),
            outcome(lambda: provider.refresh(WEBHOOK, tokens)),
        ]
    finally:
        provider.close()
    assert len(seen) == 3
    for exc in errors:
        if exc is not None:
            assert type(exc) in ERROR_CLASSES
            assert WEBHOOK_TOKEN not in str(exc)
            assert "refresh-secret" not in str(exc)
