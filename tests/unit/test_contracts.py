"""The public payload contract: what the OpenAPI document promises is what the contract
accepts, and what it refuses is refused by name, never by a database error later."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from herald.contracts import (
    SETTINGS_MAX_DEPTH,
    MediaIn,
    PostRequest,
    ReschedulePost,
    has_unstorable_text,
    scrub_unstorable,
)

DOCUMENT = PostRequest.model_json_schema()
KEY_SCHEMA = DOCUMENT["properties"]["idempotency_key"]


def request(**overrides: Any) -> dict[str, Any]:
    return {
        "integration_id": str(uuid.uuid4()),
        "content": "hello",
        "scheduled_at": "2030-01-01T09:00:00Z",
        "idempotency_key": "k-1",
        **overrides,
    }


def refusal(**overrides: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as refused:
        PostRequest.model_validate(request(**overrides))
    [error] = refused.value.errors()
    return dict(error)


@given(st.from_regex(KEY_SCHEMA["pattern"], fullmatch=True))
def test_every_idempotency_key_the_document_allows_is_accepted(key: str) -> None:
    assert PostRequest.model_validate(request(idempotency_key=key)).idempotency_key == key


@pytest.mark.parametrize("key", ["", "has space", "k" * 201, "semi;colon", "line\n", "ü"])
def test_keys_outside_the_documented_pattern_are_refused(key: str) -> None:
    assert refusal(idempotency_key=key)["loc"] == ("idempotency_key",)


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_text_without_nul_is_storable_and_text_with_it_is_not(text: str) -> None:
    assert has_unstorable_text(text) == ("\x00" in text)
    assert not has_unstorable_text(scrub_unstorable(text + "\x00"))


def test_a_dead_letter_copy_keeps_everything_postgres_can_store() -> None:
    refused = {"k\x00": ["v\ud800", math.inf, math.nan, 1.5, None, True], "n": {"x": "ok"}}

    assert scrub_unstorable(refused) == {
        "k\ufffd": ["v\ufffd", "inf", "nan", 1.5, None, True],
        "n": {"x": "ok"},
    }


def test_a_dead_letter_copy_of_a_very_deep_payload_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(500):
        deep = [deep]

    kept = scrub_unstorable(deep)

    for _ in range(64):
        kept = kept[0]
    assert kept == "(nested too deep to keep)"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"a\x00": 1}, "names must be text"),
        ({"a": "\x00"}, "text must not contain NUL"),
        ({"a": ["\ud800"]}, "text must not contain NUL"),
        ({"a": math.inf}, "numbers must be finite"),
        ({"a": math.nan}, "numbers must be finite"),
        ({"a": object()}, "values must be JSON"),
        ({"a": "x" * 20_000}, "must be under 16384 bytes"),
    ],
)
def test_provider_settings_postgres_could_not_store_are_refused_by_name(
    settings: dict[str, Any], problem: str
) -> None:
    error = refusal(provider_settings=settings)

    assert error["loc"] == ("provider_settings",)
    assert problem in error["msg"]


def test_provider_settings_deeper_than_the_limit_are_refused() -> None:
    nested: Any = {}
    for _ in range(SETTINGS_MAX_DEPTH - 1):
        nested = {"k": nested}
    PostRequest.model_validate(request(provider_settings=nested))  # objects exactly that deep

    assert "nested" in refusal(provider_settings={"k": nested})["msg"]


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(0.5, id="a float"),
        pytest.param(1_790_000_000, id="an integer"),
        pytest.param("1790000000", id="a numeric string"),
        pytest.param("2030-01-01", id="a date alone"),
        pytest.param("2030-01-01T09:00", id="no seconds"),
        pytest.param("2030-01-01 09:00:00Z", id="a space for T"),
        pytest.param("2030-01-01T09:00:00", id="no zone"),
        pytest.param("0001-01-01T00:00:00+14:00", id="before year 1 in UTC"),
        pytest.param("9999-12-31T23:59:59-14:00", id="after year 9999 in UTC"),
    ],
)
def test_scheduled_at_is_an_rfc3339_instant_inside_the_calendar(when: object) -> None:
    assert refusal(scheduled_at=when)["loc"] == ("scheduled_at",)


def test_scheduled_at_is_kept_in_utc() -> None:
    parsed = PostRequest.model_validate(request(scheduled_at="2030-01-01T10:00:00+01:00"))

    assert parsed.scheduled_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert parsed.scheduled_at.utcoffset() is not None
    assert parsed.scheduled_at.tzinfo == UTC


@pytest.mark.parametrize("value", [True, "1", 1.5])
def test_a_count_in_a_payload_is_a_json_integer_not_something_that_converts_to_one(
    value: object,
) -> None:
    # ``true`` as the expected version used to edit version 1.
    base = {"workspace_id": str(uuid.uuid4()), "post_id": str(uuid.uuid4()), "content": "x"}
    for whole in (3, 3.0):  # JSON Schema's integer: a number without a fraction
        assert (
            ReschedulePost.model_validate({**base, "expected_version": whole}).expected_version == 3
        )
    with pytest.raises(ValidationError):
        ReschedulePost.model_validate({**base, "expected_version": value})
    with pytest.raises(ValidationError):
        MediaIn.model_validate({"url": "https://example.com/a.png", "size_bytes": value})
