"""LinkedIn: error mapping, midnight reset, little-text escaping, validation."""

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
    ContentInvalid,
    PermanentError,
    PostDraft,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.linkedin import LinkedInProvider, classify, escape_little_text
from herald.settings import Settings
from tests.fixtures.sandbox import error_bodies, header_maps, statuses
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 3, 14, 15, 9, tzinfo=UTC)


@given(statuses, header_maps, error_bodies, st.booleans(), st.booleans())
def test_any_answer_maps_to_exactly_one_class(
    status: int, headers: dict[str, str], body: Any, idempotent: bool, token: bool
) -> None:
    error = classify(status, headers, body, idempotent=idempotent, token_endpoint=token, now=NOW)
    assert_classified(error, status, write_may_duplicate=not idempotent)
    assert type(error) is not ContentInvalid


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            {"status": 401, "serviceErrorCode": 65601, "code": "EXPIRED_ACCESS_TOKEN"},
            AuthExpired,
        ),
        (403, {"status": 403, "message": "Not enough permissions"}, PermanentError),
        (422, {"status": 422, "code": "DUPLICATE_POST", "message": "duplicate"}, PermanentError),
        (426, {"status": 426, "code": "NONEXISTENT_VERSION"}, PermanentError),
        (503, None, TransientError),
        (500, None, AmbiguousOutcome),
        (504, "<html>gateway</html>", AmbiguousOutcome),
    ],
)
def test_mapping_table(status: int, body: Any, expected: type) -> None:
    assert type(classify(status, {}, body, idempotent=False, now=NOW)) is expected


def test_429_resets_at_the_next_midnight_utc() -> None:
    error = classify(429, {}, {"status": 429}, idempotent=False, now=NOW)
    assert isinstance(error, RateLimited)
    assert error.reset_at == datetime(2026, 3, 15, tzinfo=UTC)


def test_refused_refresh_needs_reauth() -> None:
    body = {"error": "invalid_grant", "error_description": "expired"}
    error = classify(400, {}, body, idempotent=True, token_endpoint=True, now=NOW)
    assert type(error) is ReauthRequired
    assert error.provider_code == "invalid_grant"


def test_little_text_reserved_characters_are_escaped() -> None:
    assert escape_little_text("a_b (c) #d @e [f] *g* ~h~ <i> {j} |k| \\l") == (
        "a\\_b \\(c\\) \\#d \\@e \\[f\\] \\*g\\* \\~h\\~ \\<i\\> \\{j\\} \\|k\\| \\\\l"
    )


def test_length_rule_counts_raw_characters() -> None:
    provider = LinkedInProvider(Settings(env="development"))
    provider.validate(PostDraft("(" * 3000, "k"), Account("m"))  # escaping does not count
    with pytest.raises(ContentInvalid) as info:
        provider.validate(PostDraft("a" * 3001, "k"), Account("m"))
    assert info.value.rule == "linkedin.max_length"


def test_author_is_the_page_when_one_is_configured() -> None:
    assert LinkedInProvider.author_urn(Account("abc")) == "urn:li:person:abc"
    page = Account("abc", settings={"organization_id": "42"})
    assert LinkedInProvider.author_urn(page) == "urn:li:organization:42"
