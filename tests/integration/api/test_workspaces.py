"""Workspaces and members over the API: who may do what, the last owner, soft delete."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from herald import db
from herald.models import Integration, IntegrationStatus, PostStatus
from herald.publishing.dispatch import claim_due_posts
from herald.settings import get_settings
from tests.integration.api.conftest import (
    AuditOf,
    Tenant,
    assert_error,
    bearer,
    mint,
    query,
)

WS = "/api/postiz/workspaces"


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def create(client: TestClient, owner: str, name: str = "Acme") -> dict[str, object]:
    response = client.post(WS, json={"name": name}, headers=bearer(mint(owner)))
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_user_creates_lists_and_renames_a_workspace_it_owns(
    client: TestClient, audit_of: AuditOf
) -> None:
    alice = user()
    ws = create(client, alice, "Acme Marketing")
    assert (ws["role"], ws["members"]) == ("owner", 1)
    assert str(ws["slug"]).startswith("acme-marketing-")

    listed = client.get(WS, headers=bearer(mint(alice))).json()["items"]
    assert [w["id"] for w in listed] == [ws["id"]]
    assert client.get(WS, headers=bearer(mint(user()))).json()["items"] == []

    renamed = client.patch(f"{WS}/{ws['id']}", json={"name": "Acme"}, headers=bearer(mint(alice)))
    assert renamed.json()["name"] == "Acme"
    actions = [e.details["action"] for e in audit_of("admin.action")]
    assert actions[-2:] == ["workspace.create", "workspace.rename"]


def test_owners_and_admins_manage_members_and_members_do_not(
    client: TestClient, audit_of: AuditOf
) -> None:
    owner, admin, member, newcomer = user(), user(), user(), user()
    ws = create(client, owner)
    members = f"{WS}/{ws['id']}/members"
    as_owner, as_admin, as_member = (bearer(mint(u)) for u in (owner, admin, member))

    assert (
        client.post(members, json={"user_id": admin, "role": "admin"}, headers=as_owner).status_code
        == 201
    )
    assert client.post(members, json={"user_id": member}, headers=as_admin).status_code == 201
    assert_error(
        client.post(members, json={"user_id": admin}, headers=as_owner), 409, "already_member"
    )

    # A member reads but does not manage; an admin cannot make an owner.
    assert len(client.get(members, headers=as_member).json()["items"]) == 3
    assert_error(
        client.post(members, json={"user_id": newcomer}, headers=as_member), 403, "forbidden"
    )
    assert_error(
        client.patch(f"{members}/{member}", json={"role": "owner"}, headers=as_admin),
        403,
        "forbidden",
    )
    assert_error(client.delete(f"{WS}/{ws['id']}", headers=as_admin), 403, "forbidden")
    assert len(audit_of("access.denied")) >= 3

    changed = client.patch(f"{members}/{member}", json={"role": "admin"}, headers=as_admin)
    assert changed.json()["role"] == "admin"
    assert client.delete(f"{members}/{member}", headers=as_admin).status_code == 204
    assert_error(client.delete(f"{members}/{member}", headers=as_admin), 404, "member_not_found")

    # The last owner stays.
    assert_error(client.delete(f"{members}/{owner}", headers=as_owner), 409, "last_owner")
    assert_error(
        client.patch(f"{members}/{owner}", json={"role": "member"}, headers=as_owner),
        409,
        "last_owner",
    )


def test_a_stranger_finds_no_workspace_and_the_attempt_is_audited(
    client: TestClient, audit_of: AuditOf
) -> None:
    ws = create(client, user())
    stranger = bearer(mint(user()))
    assert_error(client.get(f"{WS}/{ws['id']}", headers=stranger), 404, "workspace_not_found")
    assert_error(
        client.post(f"{WS}/{ws['id']}/members", json={"user_id": "x"}, headers=stranger),
        404,
        "workspace_not_found",
    )
    assert [e.resource_id for e in audit_of("access.cross_tenant")][-2:] == [ws["id"]] * 2


def test_the_service_role_does_everything_and_is_audited(
    client: TestClient, audit_of: AuditOf
) -> None:
    service = bearer(mint(None, "service_role"))
    owner = user()
    made = client.post(WS, json={"name": "Ops", "owner_user_id": owner}, headers=service)
    assert made.status_code == 201, made.text
    ws_id = made.json()["id"]
    assert made.json()["role"] is None
    assert ws_id in [w["id"] for w in client.get(WS, headers=service).json()["items"]]
    assert (
        client.post(
            f"{WS}/{ws_id}/members", json={"user_id": user(), "role": "owner"}, headers=service
        ).status_code
        == 201
    )
    assert client.delete(f"{WS}/{ws_id}", headers=service).status_code == 204
    assert len(audit_of("service_role.use")) >= 4
    actions = [(e.actor_type, e.details["action"]) for e in audit_of("admin.action")]
    assert ("service_role", "workspace.delete") in actions
    assert client.get(WS, headers=bearer(mint(owner))).json()["items"] == []


def test_a_deleted_workspace_vanishes_and_its_posts_stop_publishing(
    client: TestClient, tenant: Tenant
) -> None:
    due = tenant.post(status=PostStatus.SCHEDULED)
    assert client.delete(f"{WS}/{tenant.workspace.id}", headers=tenant.headers).status_code == 204

    (integration,) = query(select(Integration).where(Integration.id == tenant.integration.id))
    assert integration.status is IntegrationStatus.DISABLED
    with db.session_scope() as session:
        claimed = {c.post_id for c in claim_due_posts(session, get_settings())}
    assert due.id not in claimed
    # Nobody finds it any more: not its owner, not by header.
    assert_error(
        client.get("/api/postiz/posts", headers=tenant.headers), 404, "workspace_not_found"
    )
    assert_error(
        client.get(f"{WS}/{tenant.workspace.id}", headers=tenant.headers),
        404,
        "workspace_not_found",
    )


def test_bad_workspace_input_is_refused_clearly(client: TestClient) -> None:
    headers = bearer(mint(user()))
    # What the document allows is accepted and what it refuses is refused: the name's pattern
    # says "no NUL, something besides whitespace" in Python's sense of whitespace.
    pattern = re.compile(
        client.get("/api/postiz/openapi.json").json()["components"]["schemas"]["WorkspaceIn"][
            "properties"
        ]["name"]["pattern"]
    )
    for blank in ("  ", "\u3000\t", "\x1c", "a\x00"):
        assert pattern.fullmatch(blank) is None
        refused = client.post(WS, json={"name": blank}, headers=headers)
        assert_error(refused, 422, "validation_failed")
    assert pattern.fullmatch(" Acme\u3000") is not None
    trimmed = client.post(WS, json={"name": " Acme\u3000"}, headers=headers)
    assert trimmed.status_code == 201, trimmed.text
    assert trimmed.json()["name"] == "Acme"
    assert_error(
        client.post(WS, json={"name": "A", "slug": "Not A Slug"}, headers=headers),
        422,
        "validation_failed",
    )
    taken = create(client, user())
    assert_error(
        client.post(WS, json={"name": "B", "slug": taken["slug"]}, headers=headers),
        409,
        "slug_taken",
    )
    assert_error(client.get(WS), 401, "missing_credentials")
