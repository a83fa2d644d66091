"""X: every answer maps to exactly one taxonomy class; validation names its rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthExpired,
    ConfigurationError,
    ContentInvalid,
    Media,
    PermanentError,
    PostDraft,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.x import XProvider, classify
from herald.settings import Settings
from tests.fixtures.sandbox import error_bodies, header_maps, statuses
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@given(statuses, header_maps, error_bodies, st.booleans(), st.booleans())
def test_any_answer_maps_to_exactly_one_class(
    status: int, headers: dict[str, str], body: Any, idempotent: bool, token: bool
) -> None:
    error = classify(status, headers, body, idempotent=idempotent, token_endpoint=token, now=NOW)
    assert_classified(error, status, write_may_duplicate=not idempotent)
    assert type(error) is not ContentInvalid  # content is judged before sending, not from answers
    if token and status == 400:
        # A dead grant, or Herald's own OAuth client refused: never a retry with the same grant.
        assert type(error) in (ReauthRequired, ConfigurationError)
    if not token:
        assert type(error) not in (ReauthRequired, ConfigurationError)


@pytest.mark.parametrize(
    ("status", "headers", "body", "idempotent", "expected"),
    [
        (429, {"x-rate-limit-reset": "1767229200"}, {}, False, RateLimited),
        (401, {}, {"title": "Unauthorized", "type": "about:blank"}, False, AuthExpired),
        (
            403,
            {},
            {"detail": "You are not allowed to create a Tweet with duplicate content."},
            False,
            PermanentError,
        ),
        (400, {}, "not json", False, PermanentError),
        (503, {}, None, False, TransientError),
        (500, {}, None, False, AmbiguousOutcome),
        (500, {}, None, True, TransientError),
        (302, {}, None, False, AmbiguousOutcome),
    ],
)
def test_mapping_table(
    status: int, headers: dict[str, str], body: Any, idempotent: bool, expected: type
) -> None:
    assert type(classify(status, headers, body, idempotent=idempotent, now=NOW)) is expected


def test_rate_limit_reset_is_the_epoch_header_or_fifteen_minutes() -> None:
    error = classify(429, {"x-rate-limit-reset": "1767229200"}, None, idempotent=False, now=NOW)
    assert isinstance(error, RateLimited)
    assert error.reset_at == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    error = classify(429, {"x-rate-limit-reset": "soon"}, None, idempotent=False, now=NOW)
    assert isinstance(error, RateLimited)
    assert (error.reset_at - NOW).total_seconds() == 900


def test_dead_refresh_token_needs_reauth() -> None:
    body = {
        "error": "invalid_request",
        "error_description": "Value passed for the token was invalid.",
    }
    error = classify(400, {}, body, idempotent=False, token_endpoint=True, now=NOW)
    assert type(error) is ReauthRequired
    assert error.message == "Value passed for the token was invalid."


@pytest.mark.parametrize(
    ("draft", "rule"),
    [
        (PostDraft("", "k"), "x.empty"),
        (PostDraft("😀" * 141, "k"), "x.max_weighted_length"),
        (PostDraft("中" * 141, "k"), "x.max_weighted_length"),
        (PostDraft("hi", "k", media=(Media("u", "video"), Media("v", "image"))), "x.media_count"),
        (PostDraft("hi", "k", media=(Media("u", "image", size_bytes=6_000_000),)), "x.media_size"),
    ],
)
def test_validation_names_the_rule(draft: PostDraft, rule: str) -> None:
    provider = XProvider(Settings(env="development"))
    with pytest.raises(ContentInvalid) as info:
        provider.validate(draft, Account("1"))
    assert info.value.rule == rule


def test_280_weighted_characters_fit() -> None:
    XProvider(Settings(env="development")).validate(PostDraft("😀" * 140, "k"), Account("1"))
