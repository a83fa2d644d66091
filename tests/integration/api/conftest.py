"""API fixtures: the app on the test database, tokens minted like the host application's, and
committed workspaces with a member, an integration and a post or two."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.api import create_app
from herald.models import AuditEvent, Integration, Membership, Post, Role, Workspace, utcnow
from herald.settings import get_settings
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_post, make_workspace


def mint(
    sub: str | None = "user-1",
    role: str = "authenticated",
    *,
    key: str | None = None,
    algorithm: str = "HS256",
    expires_in: float = 300,
    **claims: Any,
) -> str:
    """A token as Supabase issues it, signed with the test run's secret unless told."""
    secret = get_settings().jwt_secret
    assert secret is not None
    body: dict[str, Any] = {
        "role": role,
        "aud": "authenticated",
        "iat": utcnow(),
        "exp": utcnow() + timedelta(seconds=expires_in),
        **claims,
    }
    body["sub"] = sub
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key or secret.get_secret_value(), algorithm=algorithm)


def service_token() -> str:
    """A service-role token minted now: one minted at import would expire (5 min) before a
    test collected early runs late in a long suite."""
    return mint(sub=None, role="service_role")


def bearer(token: str, workspace_id: uuid.UUID | str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if workspace_id is not None:
        headers["X-Workspace-ID"] = str(workspace_id)
    return headers


@dataclass(frozen=True)
class Tenant:
    workspace: Workspace
    integration: Integration
    user_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(mint(self.user_id), self.workspace.id)

    def post(self, **values: Any) -> Post:
        with service_session() as session:
            return make_post(session, self.integration, **values)


def _tenant(role: Role = Role.OWNER) -> Tenant:
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    with service_session() as session:
        workspace = make_workspace(session)
        session.add(Membership(workspace_id=workspace.id, user_id=user_id, role=role))
        integration = make_integration(session, workspace, provider="bluesky")
    return Tenant(workspace, integration, user_id)


@pytest.fixture
def tenant(committed: Engine) -> Tenant:
    return _tenant()


@pytest.fixture
def other_tenant(committed: Engine) -> Tenant:
    return _tenant()


@pytest.fixture
def client(committed: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings())) as test_client:
        yield test_client


def query(statement: Any) -> list[Any]:
    with service_session() as session:
        return list(session.scalars(statement).all())


AuditOf = Callable[[str], list[AuditEvent]]


@pytest.fixture
def audit_of(committed: Engine) -> AuditOf:
    """``audit_of("access.cross_tenant")``: the audit rows of that type, oldest first."""

    def _of(event_type: str) -> list[AuditEvent]:
        return query(
            select(AuditEvent).where(AuditEvent.event_type == event_type).order_by(AuditEvent.id)
        )

    return _of


def post_count(workspace_id: uuid.UUID | None = None) -> int:
    statement = select(Post.id)
    if workspace_id is not None:
        statement = statement.where(Post.workspace_id == workspace_id)
    return len(query(statement))


def schedule_body(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    return {
        "integration_id": str(tenant.integration.id),
        "content": "Launch day! https://example.com",
        "scheduled_at": (utcnow() + timedelta(hours=1)).isoformat(),
        "idempotency_key": f"campaign-{uuid.uuid4().hex[:8]}",
        **overrides,
    }


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error format: status, code, message, details, and the echoed correlation id."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert error["correlation_id"] == response.headers["X-Correlation-ID"]
    assert "Traceback" not in response.text
    return dict(error)


def member_headers(workspace_id: uuid.UUID) -> dict[str, str]:
    """Authorization headers of a new owner of ``workspace_id`` (committed)."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    with service_session() as session:
        session.add(Membership(workspace_id=workspace_id, user_id=user, role=Role.OWNER))
    return bearer(mint(user), workspace_id)


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once (released together by a barrier); their results in order."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))
