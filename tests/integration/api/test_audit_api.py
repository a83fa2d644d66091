"""``GET /api/postiz/audit``: owners and admins see their workspace's rows, the service role
every workspace's (and its read is audited); filters; what the API's own changes record."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient

from herald.models import Membership, Role, utcnow
from herald.security.audit import Actor
from herald.security.audit_admin import erase_subject
from tests.fixtures.database import service_session
from tests.integration.api.conftest import AuditOf, Tenant, bearer, mint, service_token

URL = "/api/postiz/audit"


def _schedule(client: TestClient, tenant: Tenant) -> str:
    response = client.post(
        "/api/postiz/posts",
        headers={**tenant.headers, "User-Agent": "tests\r\nX-Forged: 1"},
        json={
            "integration_id": str(tenant.integration.id),
            "content": "audited",
            "idempotency_key": uuid.uuid4().hex,
            "scheduled_at": (utcnow() + timedelta(days=1)).isoformat(),
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_owners_see_their_workspace_and_every_field(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    post_id = _schedule(client, tenant)
    _schedule(client, other_tenant)
    client.delete(f"/api/postiz/posts/{post_id}", headers=tenant.headers)

    page = client.get(URL, headers=tenant.headers, params={"event_type": "post.changed"})

    assert page.status_code == 200, page.text
    events = page.json()["events"]
    assert [e["action"] for e in events] == ["post.cancel", "post.create"]
    assert {e["workspace_id"] for e in events} == {str(tenant.workspace.id)}
    create = events[1]
    assert (create["actor_type"], create["actor_id"]) == ("user", tenant.user_id)
    assert (create["resource_type"], create["resource_id"]) == ("post", post_id)
    assert create["outcome"] == "success"
    assert create["ip"] == "testclient"
    assert create["user_agent"] == "tests\\r\\nX-Forged: 1"
    assert create["correlation_id"]


def test_filters_and_pages(client: TestClient, tenant: Tenant) -> None:
    for _ in range(3):
        _schedule(client, tenant)
    first = client.get(URL, headers=tenant.headers, params={"limit": 2, "outcome": "success"})
    body = first.json()
    assert len(body["events"]) == 2
    assert body["next_before"] == body["events"][-1]["sequence"]
    rest = client.get(
        URL, headers=tenant.headers, params={"limit": 2, "before": body["next_before"]}
    ).json()
    assert rest["events"]
    assert rest["events"][0]["sequence"] < body["next_before"]
    assert client.get(URL, headers=tenant.headers, params={"severity": "critical"}).json() == {
        "events": [],
        "next_before": None,
    }


def test_members_are_refused_and_the_service_role_sees_all_audited(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    _schedule(client, tenant)
    _schedule(client, other_tenant)
    member = f"user-{uuid.uuid4().hex[:8]}"
    with service_session() as session:
        session.add(Membership(workspace_id=tenant.workspace.id, user_id=member, role=Role.MEMBER))
    refused = client.get(URL, headers=bearer(mint(member), tenant.workspace.id))
    assert refused.status_code == 403

    everything = client.get(
        URL, headers=bearer(service_token()), params={"event_type": "post.changed"}
    )

    assert everything.status_code == 200
    workspaces = {e["workspace_id"] for e in everything.json()["events"]}
    assert workspaces == {str(tenant.workspace.id), str(other_tenant.workspace.id)}
    assert any(e.details.get("path") == URL for e in audit_of("service_role.use"))


def test_a_foreign_workspace_is_a_cross_tenant_attempt(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    response = client.get(URL, headers=bearer(mint(tenant.user_id), other_tenant.workspace.id))
    assert response.status_code == 404
    [attempt] = audit_of("access.cross_tenant")
    assert attempt.actor_id == tenant.user_id


def test_erased_personal_data_reads_null(client: TestClient, tenant: Tenant) -> None:
    _schedule(client, tenant)
    with service_session() as session:
        erase_subject(session, tenant.user_id, Actor("cli", "dpo"))
    events = client.get(URL, headers=tenant.headers, params={"event_type": "post.changed"})
    [event] = events.json()["events"]
    assert (event["ip"], event["user_agent"]) == (None, None)
