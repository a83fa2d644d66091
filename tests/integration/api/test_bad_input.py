"""Input Postgres cannot store, instants outside the calendar and numbers posing as dates are
refused with a 4xx in the one error format: never a 500, and nothing is written."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Tenant, assert_error, post_count, schedule_body

UNSTORABLE = [
    ("NUL in content", {"content": "hello\x00world"}, "body.content"),
    ("lone surrogate in content", {"content": "hello \ud800"}, "body.content"),
    ("NUL in a settings key", {"provider_settings": {"ti\x00tle": "x"}}, "body.provider_settings"),
    (
        "NUL in a settings value",
        {"provider_settings": {"title": "x\x00"}},
        "body.provider_settings",
    ),
    (
        "NUL deep in the settings",
        {"provider_settings": {"thread": [{"parts": ["a", "b\x00"]}]}},
        "body.provider_settings",
    ),
    ("NUL in alt text", {"media": [{"url": "https://e.com/a.png", "alt_text": "\x00"}]}, None),
]


@pytest.mark.parametrize(("name", "overrides", "field"), UNSTORABLE, ids=[u[0] for u in UNSTORABLE])
def test_text_postgres_cannot_store_is_422_naming_the_field_without_echoing_it(
    client: TestClient, tenant: Tenant, name: str, overrides: dict[str, Any], field: str | None
) -> None:
    body = json.dumps(schedule_body(tenant, **overrides))  # \u0000 and \ud800 as JSON escapes

    response = client.post(
        "/api/postiz/posts",
        content=body.encode(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    error = assert_error(response, 422, "validation_failed")
    fields = error["details"]["fields"]
    if field is not None:
        assert [f["field"] for f in fields] == [field]
    assert "\\u0000" not in response.text
    assert "ti\x00tle" not in response.text
    assert post_count() == 0


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param("1e400", id="a number too large for a float"),
        pytest.param("NaN", id="NaN"),
        pytest.param("[-Infinity]", id="infinity"),
    ],
)
def test_a_non_finite_number_in_the_settings_is_422(
    client: TestClient, tenant: Tenant, settings: str
) -> None:
    body = (
        json.dumps(schedule_body(tenant)).rstrip("}")
        + f', "provider_settings": {{"n": {settings}}}}}'
    )

    response = client.post(
        "/api/postiz/posts",
        content=body.encode(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    error = assert_error(response, 422, "validation_failed")
    assert [f["field"] for f in error["details"]["fields"]] == ["body.provider_settings"]
    assert post_count() == 0


def test_settings_nested_deeper_than_the_limit_are_422(client: TestClient, tenant: Tenant) -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"k": deep}

    response = client.post(
        "/api/postiz/posts",
        json=schedule_body(tenant, provider_settings=deep),
        headers=tenant.headers,
    )

    error = assert_error(response, 422, "validation_failed")
    assert [f["field"] for f in error["details"]["fields"]] == ["body.provider_settings"]


def test_a_body_nested_too_deep_to_parse_is_400_in_the_format(
    client: TestClient, tenant: Tenant
) -> None:
    body = b'{"content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = client.post(
        "/api/postiz/posts",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    error = assert_error(response, 400, "malformed_json")
    assert "nested" in error["message"]
    assert post_count() == 0


EXTREMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
]


@pytest.mark.parametrize("when", EXTREMES)
@pytest.mark.parametrize("parameter", ["scheduled_from", "scheduled_to"])
def test_an_instant_outside_the_calendar_in_a_filter_is_422(
    client: TestClient, tenant: Tenant, parameter: str, when: str
) -> None:
    response = client.get("/api/postiz/posts", params={parameter: when}, headers=tenant.headers)

    error = assert_error(response, 422, "validation_failed")
    [problem] = error["details"]["fields"]
    assert problem["field"] == f"query.{parameter}"
    assert "range" in problem["message"]


@pytest.mark.parametrize("when", ["0.5", "1700000000", "-1", "1e10"])
def test_a_number_is_not_a_date_in_a_filter(client: TestClient, tenant: Tenant, when: str) -> None:
    response = client.get(
        "/api/postiz/posts", params={"scheduled_to": when}, headers=tenant.headers
    )

    error = assert_error(response, 422, "validation_failed")
    assert [f["field"] for f in error["details"]["fields"]] == ["query.scheduled_to"]


@pytest.mark.parametrize(
    "when",
    [0.5, 1_700_000_000, "1700000000", "2030-01-01", "2030-01-01T09:00", *EXTREMES],
)
def test_scheduled_at_must_be_a_date_time_with_a_zone_inside_the_calendar(
    client: TestClient, tenant: Tenant, when: object
) -> None:
    response = client.post(
        "/api/postiz/posts", json=schedule_body(tenant, scheduled_at=when), headers=tenant.headers
    )

    error = assert_error(response, 422, "validation_failed")
    assert [f["field"] for f in error["details"]["fields"]] == ["body.scheduled_at"]
    assert post_count() == 0


def _cursor(scheduled_at: str) -> str:
    raw = json.dumps({"s": scheduled_at, "i": "00000000-0000-4000-8000-000000000000"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("when", [*EXTREMES, "2030-01-01T00:00:00"])
def test_a_cursor_outside_the_calendar_is_an_invalid_cursor(
    client: TestClient, tenant: Tenant, when: str
) -> None:
    response = client.get(
        "/api/postiz/posts", params={"cursor": _cursor(when)}, headers=tenant.headers
    )

    assert_error(response, 400, "invalid_cursor")


def test_a_date_with_an_offset_is_compared_as_the_same_instant_in_utc(
    client: TestClient, tenant: Tenant
) -> None:
    tenant.post(scheduled_at=datetime(2030, 1, 1, 12, tzinfo=UTC))

    before = client.get(
        "/api/postiz/posts",
        params={"scheduled_to": "2030-01-01T13:00:00+01:00"},  # 12:00 UTC, exclusive
        headers=tenant.headers,
    )
    after = client.get(
        "/api/postiz/posts",
        params={"scheduled_from": "2030-01-01T13:00:00+01:00"},
        headers=tenant.headers,
    )

    assert before.json()["items"] == []
    assert len(after.json()["items"]) == 1
