"""Scheduling, reading, listing, cancelling and retrying posts through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from herald.api.schemas import ScheduleRequest
from herald.contracts import SchedulePost
from herald.models import Post, PostStatus, PublishAttempt, utcnow
from tests.fixtures.database import service_session
from tests.integration.api.conftest import (
    AuditOf,
    Tenant,
    assert_error,
    post_count,
    query,
    schedule_body,
)


def test_scheduling_creates_one_post_and_the_same_key_again_returns_it(
    client: TestClient, tenant: Tenant
) -> None:
    body = schedule_body(tenant)

    first = client.post("/api/postiz/posts", json=body, headers=tenant.headers)
    again = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    created = first.json()
    assert created["status"] == "scheduled"
    assert created["provider"] == "bluesky"
    assert created["workspace_id"] == str(tenant.workspace.id)
    assert created["attempt_count"] == 0
    assert post_count(tenant.workspace.id) == 1


@pytest.mark.parametrize(
    "settings", [{"a": 1e308}, {"a": 12345678901234567890.0, "b": [0.1, -0.0, 1e-7]}]
)
def test_the_same_request_again_is_the_same_post_whatever_numbers_its_settings_hold(
    client: TestClient, tenant: Tenant, settings: dict[str, object]
) -> None:
    """Postgres keeps a JSON number as a decimal: 1e308 reads back as the integer 10**308. A
    client's retry, byte for byte the same, is the same post (it was a 409 conflict)."""
    body = schedule_body(tenant, provider_settings=settings)
    first = client.post("/api/postiz/posts", json=body, headers=tenant.headers)
    again = client.post("/api/postiz/posts", json=body, headers=tenant.headers)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    "change",
    [
        {"content": "Something else"},
        {"media": [{"url": "https://cdn.example.com/other.png", "kind": "image"}]},
        {"provider_settings": {"langs": ["fr"]}},
    ],
    ids=["content", "media", "provider_settings"],
)
def test_the_same_key_for_a_different_post_is_a_conflict(
    client: TestClient, tenant: Tenant, change: dict[str, object]
) -> None:
    body = schedule_body(tenant, media=[{"url": "https://cdn.example.com/a.png", "kind": "image"}])
    assert client.post("/api/postiz/posts", json=body, headers=tenant.headers).status_code == 201

    response = client.post("/api/postiz/posts", json={**body, **change}, headers=tenant.headers)

    assert_error(response, 409, "idempotency_conflict")
    assert post_count(tenant.workspace.id) == 1


def test_a_member_of_one_workspace_need_not_name_it(client: TestClient, tenant: Tenant) -> None:
    headers = {"Authorization": tenant.headers["Authorization"]}

    response = client.post("/api/postiz/posts", json=schedule_body(tenant), headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["workspace_id"] == str(tenant.workspace.id)


def test_get_shows_status_result_and_every_attempt(client: TestClient, tenant: Tenant) -> None:
    post = tenant.post(
        status=PostStatus.PUBLISHED,
        attempts=2,
        external_id="at://did:plc:x/app.bsky.feed.post/1",
        external_url="https://bsky.app/profile/x/post/1",
        last_error_code="transient",
        last_error_message="503 from the network",
    )
    started = utcnow() - timedelta(minutes=5)
    with service_session() as session:
        for number, outcome, code, status in (
            (1, "transient", "transient", 503),
            (2, "success", None, 200),
        ):
            session.add(
                PublishAttempt(
                    workspace_id=tenant.workspace.id,
                    post_id=post.id,
                    provider="bluesky",
                    attempt_number=number,
                    started_at=started + timedelta(minutes=number),
                    finished_at=started + timedelta(minutes=number, seconds=1),
                    latency_ms=1000,
                    outcome=outcome,
                    error_code=code,
                    http_status=status,
                )
            )

    response = client.get(f"/api/postiz/posts/{post.id}", headers=tenant.headers)

    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["status"] == "published"
    assert detail["provider"] == "bluesky"
    assert detail["external_id"] == "at://did:plc:x/app.bsky.feed.post/1"
    assert detail["external_url"] == "https://bsky.app/profile/x/post/1"
    assert detail["last_error"] == {"code": "transient", "message": "503 from the network"}
    assert [a["number"] for a in detail["attempts"]] == [1, 2]
    first = detail["attempts"][0]
    assert first["outcome"] == "transient"
    assert first["error_code"] == "transient"
    assert first["http_status"] == 503
    assert first["latency_ms"] == 1000
    assert first["started_at"]
    assert first["finished_at"]


def test_list_filters_by_status_integration_and_time(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    now = utcnow()
    soon = tenant.post(scheduled_at=now + timedelta(hours=1))
    later = tenant.post(scheduled_at=now + timedelta(days=2))
    failed = tenant.post(scheduled_at=now + timedelta(hours=3), status=PostStatus.FAILED)
    other_tenant.post(scheduled_at=now + timedelta(hours=1))  # never listed

    def ids(**params: object) -> list[str]:
        response = client.get("/api/postiz/posts", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids() == [str(soon.id), str(failed.id), str(later.id)]
    assert ids(status="failed") == [str(failed.id)]
    assert ids(status=["failed", "scheduled"]) == [str(soon.id), str(failed.id), str(later.id)]
    assert ids(integration_id=str(tenant.integration.id)) == [
        str(soon.id),
        str(failed.id),
        str(later.id),
    ]
    window = {
        "scheduled_from": (now + timedelta(minutes=30)).isoformat(),
        "scheduled_to": (now + timedelta(days=1)).isoformat(),
    }
    assert ids(**window) == [str(soon.id), str(failed.id)]


def test_list_pages_with_a_cursor(client: TestClient, tenant: Tenant) -> None:
    now = utcnow()
    made = [str(tenant.post(scheduled_at=now + timedelta(minutes=i)).id) for i in range(5)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/postiz/posts", params=params, headers=tenant.headers).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == made
    assert pages == 3


def test_list_refuses_a_limit_over_200_and_a_forged_cursor(
    client: TestClient, tenant: Tenant
) -> None:
    too_many = client.get("/api/postiz/posts", params={"limit": 201}, headers=tenant.headers)
    forged = client.get("/api/postiz/posts", params={"cursor": "bm9wZQ"}, headers=tenant.headers)

    error = assert_error(too_many, 422, "validation_failed")
    assert error["details"]["fields"][0]["field"] == "query.limit"
    assert_error(forged, 400, "invalid_cursor")


@pytest.mark.parametrize(
    "status", [PostStatus.DRAFT, PostStatus.SCHEDULED, PostStatus.QUEUED, PostStatus.RETRYING]
)
def test_cancel_a_post_that_has_not_started(
    client: TestClient, tenant: Tenant, status: PostStatus
) -> None:
    post = tenant.post(status=status)

    response = client.delete(f"/api/postiz/posts/{post.id}", headers=tenant.headers)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert query(select(Post.status).where(Post.id == post.id)) == [PostStatus.CANCELLED]


@pytest.mark.parametrize("status", [PostStatus.PUBLISHING, PostStatus.PUBLISHED, PostStatus.FAILED])
def test_cancel_refuses_a_post_past_the_point_of_no_return(
    client: TestClient, tenant: Tenant, status: PostStatus
) -> None:
    post = tenant.post(status=status)

    response = client.delete(f"/api/postiz/posts/{post.id}", headers=tenant.headers)

    error = assert_error(response, 409, "post_not_cancellable")
    assert error["details"] == {"status": status.value}
    assert query(select(Post.status).where(Post.id == post.id)) == [status]


def test_cancelling_twice_is_harmless(client: TestClient, tenant: Tenant) -> None:
    post = tenant.post()
    client.delete(f"/api/postiz/posts/{post.id}", headers=tenant.headers)

    again = client.delete(f"/api/postiz/posts/{post.id}", headers=tenant.headers)

    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


@pytest.mark.parametrize("status", [PostStatus.FAILED, PostStatus.NEEDS_REVIEW])
def test_retry_sends_a_failed_or_unknown_post_back_due_now_and_audits_it(
    client: TestClient, tenant: Tenant, audit_of: AuditOf, status: PostStatus
) -> None:
    post = tenant.post(
        status=status,
        scheduled_at=utcnow() - timedelta(hours=3),
        next_attempt_at=utcnow() + timedelta(hours=1),
        attempts=5,
    )
    before = utcnow()

    response = client.post(f"/api/postiz/posts/{post.id}/retry", headers=tenant.headers)

    assert response.status_code == 200, response.text
    stored = query(select(Post).where(Post.id == post.id))[0]
    assert stored.status == PostStatus.SCHEDULED
    assert stored.next_attempt_at is None
    assert stored.scheduled_at >= before - timedelta(seconds=1)
    assert stored.correlation_id == response.headers["X-Correlation-ID"]
    [event] = audit_of("admin.action")
    assert event.resource_id == str(post.id)
    assert event.actor_id == tenant.user_id
    assert event.details["from_status"] == status.value
    assert event.correlation_id == response.headers["X-Correlation-ID"]


@pytest.mark.parametrize(
    "status", [PostStatus.SCHEDULED, PostStatus.PUBLISHING, PostStatus.PUBLISHED]
)
def test_retry_refuses_other_statuses(
    client: TestClient, tenant: Tenant, audit_of: AuditOf, status: PostStatus
) -> None:
    post = tenant.post(status=status)

    response = client.post(f"/api/postiz/posts/{post.id}/retry", headers=tenant.headers)

    assert_error(response, 409, "post_not_retryable")
    assert query(select(Post.status).where(Post.id == post.id)) == [status]
    assert audit_of("admin.action") == []


def test_the_request_body_is_the_task_contract_without_workspace_id() -> None:
    assert set(ScheduleRequest.model_fields) == set(SchedulePost.model_fields) - {"workspace_id"}
