"""One error format for everything; bad input creates nothing; correlation ids flow through."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.api import create_app
from herald.models import Post, utcnow
from herald.settings import get_settings
from tests.integration.api.conftest import Tenant, assert_error, post_count, query, schedule_body


def test_the_correlation_id_is_echoed_and_stored_on_the_post(
    client: TestClient, tenant: Tenant
) -> None:
    headers = {**tenant.headers, "X-Correlation-ID": "req-7f3a.42"}

    response = client.post("/api/postiz/posts", json=schedule_body(tenant), headers=headers)

    assert response.headers["X-Correlation-ID"] == "req-7f3a.42"
    stored = query(select(Post.correlation_id).where(Post.id == response.json()["id"]))
    assert stored == ["req-7f3a.42"]
    assert response.json()["correlation_id"] == "req-7f3a.42"


def test_a_malformed_correlation_id_is_replaced_with_a_fresh_one(
    client: TestClient, tenant: Tenant
) -> None:
    headers = {**tenant.headers, "X-Correlation-ID": "bad id\nforged: line"}

    response = client.get("/api/postiz/posts", headers=headers)

    echoed = response.headers["X-Correlation-ID"]
    assert echoed
    assert "\n" not in echoed
    assert echoed != "bad id\nforged: line"


@pytest.mark.parametrize(
    ("name", "overrides", "field"),
    [
        ("wrong type", {"content": 42}, "body.content"),
        (
            "unknown field",
            {"workspace_id": "00000000-0000-4000-8000-000000000000"},
            "body.workspace_id",
        ),
        ("misspelt field", {"scheduled": "2030-01-01T00:00:00Z"}, "body.scheduled"),
        ("naive date", {"scheduled_at": "2030-01-01T09:00:00"}, "body.scheduled_at"),
        ("bad key", {"idempotency_key": "spaces are not allowed"}, "body.idempotency_key"),
        ("bad media", {"media": [{"url": "not a url"}]}, "body.media.0.url"),
        ("too long", {"content": "x" * 100_001}, "body.content"),
    ],
)
def test_a_bad_body_is_422_with_the_field_named_and_creates_nothing(
    client: TestClient, tenant: Tenant, name: str, overrides: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/api/postiz/posts", json=schedule_body(tenant, **overrides), headers=tenant.headers
    )

    error = assert_error(response, 422, "validation_failed")
    assert field in [f["field"] for f in error["details"]["fields"]]
    assert all(f["message"] for f in error["details"]["fields"])
    assert post_count() == 0


def test_a_missing_field_is_named(client: TestClient, tenant: Tenant) -> None:
    body = schedule_body(tenant)
    del body["scheduled_at"]

    response = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    error = assert_error(response, 422, "validation_failed")
    assert error["details"]["fields"][0]["field"] == "body.scheduled_at"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (timedelta(days=-2), "scheduled_at_out_of_range"),
        (timedelta(days=800), "scheduled_at_out_of_range"),
    ],
)
def test_far_past_and_far_future_dates_are_refused(
    client: TestClient, tenant: Tenant, when: timedelta, expected: str
) -> None:
    body = schedule_body(tenant, scheduled_at=(utcnow() + when).isoformat())

    response = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    assert_error(response, 422, expected)
    assert post_count() == 0


def test_content_over_the_networks_limit_is_refused_with_its_rule(
    client: TestClient, tenant: Tenant
) -> None:
    body = schedule_body(tenant, content="é" * 301)  # Bluesky: 300 graphemes

    response = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    error = assert_error(response, 422, "content_invalid")
    assert error["details"] == {"rule": "bluesky.max_graphemes"}
    assert post_count() == 0


def test_malformed_json_is_400(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        "/api/postiz/posts",
        content=b'{"content": "unterminated',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    assert_error(response, 400, "malformed_json")
    assert post_count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(
    client: TestClient, tenant: Tenant, content_type: str | None
) -> None:
    headers = dict(tenant.headers)
    if content_type:
        headers["Content-Type"] = content_type

    response = client.post(
        "/api/postiz/posts", content=json.dumps(schedule_body(tenant)).encode(), headers=headers
    )

    assert_error(response, 415, "unsupported_media_type")
    assert post_count() == 0


def test_a_huge_body_is_413(client: TestClient, tenant: Tenant) -> None:
    body = schedule_body(tenant, content="x" * (1024 * 1024 + 1))

    response = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    assert_error(response, 413, "payload_too_large")
    assert post_count() == 0


def test_a_huge_chunked_body_is_413(client: TestClient, tenant: Tenant) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(
        "/api/postiz/posts",
        content=chunks(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    assert_error(response, 413, "payload_too_large")


def test_unknown_paths_and_methods_use_the_error_format(client: TestClient, tenant: Tenant) -> None:
    assert_error(client.get("/api/postiz/nothing-here"), 404, "not_found")
    assert_error(client.put("/api/postiz/posts", headers=tenant.headers), 405, "method_not_allowed")
    assert_error(
        client.get("/api/postiz/posts/not-a-uuid", headers=tenant.headers), 422, "validation_failed"
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/postiz/posts", "GET, OPTIONS, POST"),
        (
            "PUT",
            "/api/postiz/posts/00000000-0000-4000-8000-000000000000",
            "DELETE, GET, OPTIONS, PATCH",
        ),
        ("DELETE", "/readyz", "GET, OPTIONS"),
    ],
)
def test_a_wrong_method_is_405_naming_every_method_of_the_path(
    client: TestClient, tenant: Tenant, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, headers=tenant.headers)

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allowed


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/postiz/posts", "GET, OPTIONS, POST"),
        ("/api/postiz/posts/00000000-0000-4000-8000-000000000000/retry", "OPTIONS, POST"),
    ],
)
def test_options_answers_the_allowed_methods(client: TestClient, path: str, allowed: str) -> None:
    response = client.options(path)

    assert response.status_code == 204
    assert response.headers["Allow"] == allowed
    assert response.headers["X-Correlation-ID"]
    assert response.content == b""


def test_options_on_an_unknown_path_is_404_in_the_format(client: TestClient) -> None:
    assert_error(client.options("/api/postiz/nothing-here"), 404, "not_found")


@pytest.fixture
def failing_client(committed: Engine) -> Iterator[TestClient]:
    app = create_app(get_settings())

    def explode() -> None:
        raise RuntimeError("secret-sauce=hunter2 went wrong")

    app.add_api_route("/api/postiz/_explode", explode)
    with TestClient(app) as test_client:
        yield test_client


def test_an_unexpected_failure_is_a_500_in_the_format_without_details(
    failing_client: TestClient,
) -> None:
    response = failing_client.get("/api/postiz/_explode", headers={"X-Correlation-ID": "c-500"})

    error = assert_error(response, 500, "internal_error")
    assert error["correlation_id"] == "c-500"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text


def test_readiness_checks_the_database_without_authentication(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["database"]["reachable"] is True
    assert response.headers["X-Correlation-ID"]


def test_the_openapi_document_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/api/postiz/openapi.json").json()["paths"]

    assert {
        "/api/postiz/posts",
        "/api/postiz/posts/{post_id}",
        "/api/postiz/posts/{post_id}/retry",
    } <= set(paths)


def test_the_openapi_document_declares_what_the_edge_answers(client: TestClient) -> None:
    document = client.get("/api/postiz/openapi.json").json()

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "431" in responses, (method, path)
            if method == "post":
                assert {"413", "415"} <= set(responses), path
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            for response in responses.values():
                assert response["headers"]["X-Correlation-ID"]["required"] is True
    schedule = document["components"]["schemas"]["ScheduleRequest"]["properties"]
    assert schedule["idempotency_key"]["pattern"] == "^[A-Za-z0-9._:@/+=-]{1,200}$"
    assert schedule["content"]["pattern"] == "^[^\\u0000]*$"


def test_every_request_is_one_log_line_and_one_server_span(
    client: TestClient,
    tenant: Tenant,
    log_lines: list[dict[str, Any]],
    spans: InMemorySpanExporter,
) -> None:
    post = tenant.post()
    headers = {**tenant.headers, "X-Correlation-ID": "trace-me-1"}

    client.get(f"/api/postiz/posts/{post.id}", headers=headers)

    [line] = [line for line in log_lines if line.get("event") == "http.request"]
    assert line["method"] == "GET"
    assert line["path"] == f"/api/postiz/posts/{post.id}"
    assert line["status"] == 200
    assert line["latency_ms"] >= 0
    assert line["correlation_id"] == "trace-me-1"
    assert line["trace_id"]
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == "GET /api/postiz/posts/{post_id}"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["herald.correlation_id"] == "trace-me-1"
    assert format(server.context.trace_id, "032x") == line["trace_id"]


_SERVED_ELSEWHERE = """
import sys
from fastapi.testclient import TestClient
from herald.api import create_app
from herald.settings import Settings

app = create_app(Settings(_env_file=None, log_format="console"))


@app.get("/boom")
def boom() -> None:
    token = sys.argv[1]  # a local the traceback could show
    raise RuntimeError("unexpected")


with TestClient(app, raise_server_exceptions=False) as client:
    answer = client.get("/boom", headers={"Authorization": "Bearer " + sys.argv[1]})
print("status", answer.status_code)
"""


def test_an_app_served_without_herald_api_logs_through_herald_s_redaction() -> None:
    """gunicorn or a bare uvicorn serving ``create_app`` never ran ``configure_logging``:
    structlog's own defaults rendered an unexpected error's traceback with its local variables
    (request headers, the bearer token) and redacted nothing."""
    canary = "canary-bearer-7f3a9c2e5b1d4f6a8c0e"
    run = subprocess.run(
        [sys.executable, "-c", _SERVED_ELSEWHERE, canary],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "status 500" in run.stdout, output[-3000:]
    assert "http.unhandled_error" in output
    assert canary not in output
