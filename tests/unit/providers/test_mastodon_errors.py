"""Mastodon: error mapping (ISO 8601 reset), instance limits, counting, HTML back to text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from herald.providers.base import (
    MAX_RATE_LIMIT_WAIT,
    ContentInvalid,
    PermanentError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.mastodon import (
    InstanceLimits,
    classify,
    parse_limits,
    plain_text,
    status_length,
)
from tests.fixtures.sandbox import error_bodies, header_maps, json_values, statuses
from tests.unit.providers.invariants import assert_classified

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@given(statuses, header_maps, error_bodies)
def test_any_answer_maps_to_exactly_one_class(
    status: int, headers: dict[str, str], body: Any
) -> None:
    error = classify(status, headers, body, now=NOW)
    # Mastodon de-duplicates a write by its Idempotency-Key: a resend cannot post twice.
    assert_classified(error, status, write_may_duplicate=False)
    assert type(error) is not ContentInvalid


@given(json_values)
def test_any_instance_answer_gives_usable_limits(body: Any) -> None:
    limits = parse_limits(body)
    assert limits.max_characters > 0
    assert limits.characters_reserved_per_url > 0


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": "The access token is invalid"}, ReauthRequired),
        (403, {"error": "This action is outside the authorized scopes"}, PermanentError),
        (422, {"error": "Validation failed: Text character limit of 500 exceeded"}, PermanentError),
        (404, {"error": "Record not found"}, PermanentError),
        (500, None, TransientError),
        (502, "<html>", TransientError),
    ],
)
def test_mapping_table(status: int, body: Any, expected: type) -> None:
    error = classify(status, {}, body, now=NOW)
    assert type(error) is expected
    if isinstance(body, dict):
        assert error.message == body["error"]


def test_rate_limit_reset_is_iso_8601() -> None:
    headers = {"x-ratelimit-reset": "2026-01-01T00:05:00.000Z"}
    error = classify(429, headers, {"error": "Too many requests"}, now=NOW)
    assert isinstance(error, RateLimited)
    assert error.reset_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


def test_limits_are_read_from_the_instance_document() -> None:
    body = {
        "configuration": {"statuses": {"max_characters": 5000, "characters_reserved_per_url": 30}}
    }
    assert parse_limits(body) == InstanceLimits(5000, 4, 30)


def test_every_url_counts_the_reserved_length() -> None:
    assert status_length("see https://example.com/a/very/long/path/indeed ok", 23) == 4 + 23 + 3


def test_status_html_becomes_the_text_that_was_sent() -> None:
    assert plain_text("<p>Tom &amp; Jerry &lt;3<br />line two</p>") == "Tom & Jerry <3\nline two"


@pytest.mark.parametrize("reset", ["9999-12-31T00:00:00Z", "99999999999", "2200-01-01T00:00:00"])
def test_a_rate_limit_reset_far_ahead_pauses_a_day_at_most(reset: str) -> None:
    """A broken or hostile instance's reset would park the integration's posts for good."""
    before = datetime.now(UTC)
    error = classify(429, {"x-ratelimit-reset": reset}, None)
    assert isinstance(error, RateLimited)
    assert before < error.reset_at <= datetime.now(UTC) + MAX_RATE_LIMIT_WAIT
