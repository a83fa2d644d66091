"""Who may call, in which workspace, and what the audit log keeps of every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from herald.api import create_app
from herald.models import Membership, Role
from herald.settings import get_settings
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_workspace
from tests.integration.api.conftest import (
    AuditOf,
    Tenant,
    assert_error,
    bearer,
    mint,
    post_count,
    schedule_body,
)

# -- tokens ------------------------------------------------------------------------------------


def test_a_missing_token_is_401_with_a_challenge_and_no_audit_row(
    client: TestClient, tenant: Tenant, audit_of: AuditOf
) -> None:
    response = client.get("/api/postiz/posts")

    assert_error(response, 401, "missing_credentials")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert audit_of("access.denied") == []


@pytest.mark.parametrize(
    ("name", "authorization"),
    [
        ("garbage", "Bearer not-a-jwt"),
        ("wrong scheme", "Basic dXNlcjpwYXNz"),
        ("wrong secret", "Bearer " + mint(key="another-secret-0123456789abcdef0123")),
        ("expired", "Bearer " + mint(expires_in=-120)),
        ("no expiry", "Bearer " + mint(exp=None)),
        (
            "unsigned",
            "Bearer "
            + jwt.encode({"sub": "u", "role": "authenticated", "exp": 2**32}, "", algorithm="none"),
        ),
        ("no subject", "Bearer " + mint(sub=None)),
        # Signed, but no user id Herald can store (memberships, audit actors): 500s before.
        ("subject with a NUL", "Bearer " + mint(sub="a\u0000b")),
        ("subject of 5,000 characters", "Bearer " + mint(sub="x" * 5000)),
        ("subject a lone surrogate", "Bearer " + mint(sub="\ud800")),
    ],
)
def test_a_bad_token_is_401_and_recorded(
    client: TestClient, tenant: Tenant, audit_of: AuditOf, name: str, authorization: str
) -> None:
    response = client.get(
        "/api/postiz/posts",
        headers={"Authorization": authorization, "X-Workspace-ID": str(tenant.workspace.id)},
    )

    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    [event] = audit_of("access.denied")
    assert event.outcome == "denied"
    assert event.correlation_id == response.headers["X-Correlation-ID"]
    token = authorization.partition(" ")[2]
    assert token not in str(event.details) + event.message


@pytest.mark.parametrize("role", ["anon", "admin"])
def test_a_genuine_token_of_a_role_not_accepted_is_403_and_recorded(
    client: TestClient, tenant: Tenant, audit_of: AuditOf, role: str
) -> None:
    token = mint(tenant.user_id, role=role)

    response = client.get("/api/postiz/posts", headers=bearer(token, tenant.workspace.id))

    assert_error(response, 403, "role_not_accepted")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    [event] = audit_of("access.denied")
    assert event.details["reason"] == "role"
    assert token not in str(event.details) + event.message


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rs256_client(committed: Engine, rsa_key: rsa.RSAPrivateKey) -> Iterator[TestClient]:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = get_settings().model_copy(
        update={"jwt_public_key": public_pem.decode(), "jwt_audience": "authenticated"}
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_with_a_public_key_only_rs256_tokens_for_the_audience_pass(
    rs256_client: TestClient, tenant: Tenant, rsa_key: rsa.RSAPrivateKey
) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    good = mint(tenant.user_id, key=private_pem, algorithm="RS256")
    wrong_audience = mint(tenant.user_id, key=private_pem, algorithm="RS256", aud="other")
    hs256 = mint(tenant.user_id)  # signed with the HS256 secret: not accepted any more

    assert rs256_client.get("/api/postiz/posts", headers=bearer(good)).status_code == 200
    assert_error(
        rs256_client.get("/api/postiz/posts", headers=bearer(wrong_audience)), 401, "invalid_token"
    )
    assert_error(rs256_client.get("/api/postiz/posts", headers=bearer(hs256)), 401, "invalid_token")


# -- workspace selection -------------------------------------------------------------------------


def test_a_user_of_several_workspaces_must_name_one(client: TestClient, tenant: Tenant) -> None:
    with service_session() as session:
        second = make_workspace(session)
        session.add(Membership(workspace_id=second.id, user_id=tenant.user_id, role=Role.MEMBER))

    unnamed = client.get("/api/postiz/posts", headers=bearer(mint(tenant.user_id)))
    named = client.get("/api/postiz/posts", headers=bearer(mint(tenant.user_id), second.id))

    assert_error(unnamed, 400, "workspace_required")
    assert named.status_code == 200


def test_another_users_workspace_is_404_and_a_cross_tenant_attempt(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    response = client.get(
        "/api/postiz/posts", headers=bearer(mint(tenant.user_id), other_tenant.workspace.id)
    )
    missing = client.get("/api/postiz/posts", headers=bearer(mint(tenant.user_id), uuid.uuid4()))

    assert_error(response, 404, "workspace_not_found")
    assert_error(missing, 404, "workspace_not_found")
    assert response.json()["error"]["message"] == missing.json()["error"]["message"]
    [event] = audit_of("access.cross_tenant")
    assert event.severity == "high"
    assert event.actor_id == tenant.user_id
    assert len(audit_of("access.denied")) == 1  # the workspace that does not exist


SPELLINGS = {
    "braces": lambda canonical: "{" + canonical + "}",
    "urn": lambda canonical: "urn:uuid:" + canonical,
    "bare hex": lambda canonical: canonical.replace("-", ""),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("path", ["/api/postiz/posts", "/api/postiz/monitoring/metrics"])
def test_a_workspace_is_named_by_its_id_in_one_spelling(
    client: TestClient, tenant: Tenant, spelling: str, path: str
) -> None:
    """``X-Workspace-ID`` is an identifier: the canonical hyphenated UUID (either case), not
    every form ``uuid.UUID`` reads (braces, a ``urn:uuid:`` prefix, bare hex)."""
    canonical = str(tenant.workspace.id)
    token = mint(tenant.user_id)

    assert client.get(path, headers=bearer(token, canonical.upper())).status_code == 200
    odd = SPELLINGS[spelling](canonical)
    assert_error(client.get(path, headers=bearer(token, odd)), 404, "workspace_not_found")


def test_the_service_role_acts_in_the_named_workspace_and_is_audited_every_time(
    client: TestClient, tenant: Tenant, audit_of: AuditOf
) -> None:
    service = mint(sub=None, role="service_role")

    created = client.post(
        "/api/postiz/posts",
        json=schedule_body(tenant),
        headers=bearer(service, tenant.workspace.id),
    )
    listed = client.get("/api/postiz/posts", headers=bearer(service, tenant.workspace.id))
    unnamed = client.get("/api/postiz/posts", headers=bearer(service))

    assert created.status_code == 201, created.text
    assert [item["id"] for item in listed.json()["items"]] == [created.json()["id"]]
    assert_error(unnamed, 400, "workspace_required")
    events = audit_of("service_role.use")
    assert len(events) == 2
    assert {e.workspace_id for e in events} == {tenant.workspace.id}
    assert {e.actor_type for e in events} == {"service_role"}
    assert events[0].correlation_id == created.headers["X-Correlation-ID"]


# -- other workspaces' rows ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/retry")])
def test_another_workspaces_post_is_404_like_a_missing_one_and_recorded(
    client: TestClient,
    tenant: Tenant,
    other_tenant: Tenant,
    audit_of: AuditOf,
    method: str,
    suffix: str,
) -> None:
    foreign = other_tenant.post()

    response = client.request(
        method, f"/api/postiz/posts/{foreign.id}{suffix}", headers=tenant.headers
    )
    missing = client.request(
        method, f"/api/postiz/posts/{uuid.uuid4()}{suffix}", headers=tenant.headers
    )

    foreign_error = assert_error(response, 404, "post_not_found")
    missing_error = assert_error(missing, 404, "post_not_found")
    assert {**foreign_error, "correlation_id": None} == {**missing_error, "correlation_id": None}
    [event] = audit_of("access.cross_tenant")
    assert event.resource_type == "post"
    assert event.resource_id == str(foreign.id)
    assert event.workspace_id is None  # an operator's row: in the asker's it would tell
    assert event.details["asker_workspace_id"] == str(tenant.workspace.id)
    assert event.severity == "high"
    assert event.outcome == "denied"


def test_scheduling_on_another_workspaces_integration_is_404_recorded_and_creates_nothing(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    body = schedule_body(tenant, integration_id=str(other_tenant.integration.id))

    response = client.post("/api/postiz/posts", json=body, headers=tenant.headers)
    missing = client.post(
        "/api/postiz/posts",
        json=schedule_body(tenant, integration_id=str(uuid.uuid4())),
        headers=tenant.headers,
    )

    assert_error(response, 404, "integration_not_found")
    assert_error(missing, 404, "integration_not_found")
    assert post_count() == 0
    [event] = audit_of("access.cross_tenant")
    assert event.resource_type == "integration"
    assert event.resource_id == str(other_tenant.integration.id)


def test_listing_by_another_workspaces_integration_is_404_and_recorded(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    other_tenant.post()

    response = client.get(
        "/api/postiz/posts",
        params={"integration_id": str(other_tenant.integration.id)},
        headers=tenant.headers,
    )

    assert_error(response, 404, "integration_not_found")
    assert len(audit_of("access.cross_tenant")) == 1
