"""Connecting accounts by OAuth over HTTP against the sandbox: the whole flow per network,
reconnects, and every way a state or a code can be misused — refused and audited."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from herald.api import create_app
from herald.models import (
    Integration,
    IntegrationStatus,
    Membership,
    OAuthState,
    Role,
    Workspace,
    utcnow,
)
from herald.sandbox import SandboxClient, SandboxServer
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings, get_settings
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_workspace
from tests.integration.api.conftest import AuditOf, assert_error, bearer, mint, query, race

OAUTH = "/api/postiz/oauth"


@pytest.fixture
def oauth_settings(sandbox_server: SandboxServer) -> Settings:
    return get_settings().with_sandbox(sandbox_server.url)


@pytest.fixture
def api(
    committed: Engine, oauth_settings: Settings, sandbox: SandboxClient
) -> Iterator[TestClient]:
    with TestClient(create_app(oauth_settings)) as client:
        yield client


@dataclass
class Owner:
    user_id: str
    workspace_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return bearer(mint(self.user_id))


def new_owner(workspace_id: uuid.UUID | None = None, role: Role = Role.OWNER) -> Owner:
    user = f"user-{uuid.uuid4().hex[:8]}"
    with service_session() as session:
        if workspace_id is None:
            workspace_id = make_workspace(session).id
        session.add(Membership(workspace_id=workspace_id, user_id=user, role=role))
    return Owner(user, workspace_id)


@pytest.fixture
def owner(committed: Engine) -> Owner:
    return new_owner()


def start(api: TestClient, who: Owner, provider: str = "x") -> dict[str, Any]:
    response = api.get(
        f"{OAUTH}/{provider}/authorize",
        params={"workspace_id": str(who.workspace_id)},
        headers=who.headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def consent(started: dict[str, Any]) -> dict[str, str]:
    """The user approves at the (sandbox) network, which redirects to the host application's
    page for that network with the code and the state."""
    answer = httpx.get(started["url"], follow_redirects=False, timeout=30)
    assert answer.status_code in {302, 303}, answer.text
    location = answer.headers["location"]
    assert location.startswith(started["redirect_uri"] + "?")
    query_ = parse_qs(urlsplit(location).query)
    return {"code": query_["code"][0], "state": query_["state"][0]}


def finish(
    api: TestClient, who: Owner, provider: str, redirect: dict[str, str], **params: Any
) -> httpx.Response:
    return api.get(
        f"{OAUTH}/{provider}/callback", params={**redirect, **params}, headers=who.headers
    )


@pytest.mark.parametrize("provider", ["x", "linkedin", "mastodon", "threads", "reddit", "discord"])
def test_an_account_connects_by_oauth_end_to_end(
    provider: str, api: TestClient, owner: Owner, oauth_settings: Settings, audit_of: AuditOf
) -> None:
    started = start(api, owner, provider)
    assert started["redirect_uri"] == f"http://localhost:3000/integrations/social/{provider}"
    assert started["scopes"]
    if provider in {"x", "mastodon"}:
        assert started["pkce"]
        assert "code_challenge_method=S256" in started["url"]
    redirect = consent(started)

    connected = finish(api, owner, provider, redirect)
    assert connected.status_code == 200, connected.text
    body = connected.json()
    assert body["reconnected"] is False
    assert body["integration"]["status"] == "active"
    assert "token" not in connected.text.replace("token_expires_at", "")

    (stored,) = query(select(Integration).where(Integration.workspace_id == owner.workspace_id))
    tokens = open_tokens(stored, KeyRing.from_settings(oauth_settings))
    assert tokens.access_token not in stored.access_token_ciphertext
    listed = api.get("/api/postiz/integrations", headers=owner.headers).json()["items"]
    assert [i["id"] for i in listed] == [str(stored.id)]
    assert [e.event_type for e in audit_of("oauth.initiated") + audit_of("oauth.completed")] == [
        "oauth.initiated",
        "oauth.completed",
    ]


def test_a_reconnect_keeps_the_refresh_token_the_network_did_not_resend(
    api: TestClient, owner: Owner, sandbox: SandboxClient, oauth_settings: Settings
) -> None:
    account = sandbox.create_account("mastodon", handle="alice")  # issues no refresh tokens
    with service_session() as session:
        workspace = session.get_one(Workspace, owner.workspace_id)
        old = make_integration(
            session,
            workspace,
            provider="mastodon",
            external_account_id=account["account_id"],
            refresh_token="the-refresh-token-we-keep",
            status=IntegrationStatus.NEEDS_REAUTH,
            token_version=4,
        )
    body = finish(api, owner, "mastodon", consent(start(api, owner, "mastodon"))).json()
    assert (body["reconnected"], body["integration"]["id"]) == (True, str(old.id))
    (stored,) = query(select(Integration).where(Integration.id == old.id))
    assert stored.status is IntegrationStatus.ACTIVE
    assert stored.token_version == 5  # waiting posts see new tokens and go again
    tokens = open_tokens(stored, KeyRing.from_settings(oauth_settings))
    assert tokens.refresh_token == "the-refresh-token-we-keep"


def failures(audit_of: AuditOf) -> list[str]:
    return [e.details["reason"] for e in audit_of("oauth.failed")]


def test_a_state_is_single_use_and_expires(
    api: TestClient, owner: Owner, audit_of: AuditOf
) -> None:
    redirect = consent(start(api, owner))
    assert finish(api, owner, "x", redirect).status_code == 200
    replayed = assert_error(finish(api, owner, "x", redirect), 400, "oauth_state_invalid")
    assert replayed["details"] == {"reason": "reused"}

    late = consent(start(api, owner))
    with service_session() as session:
        session.execute(update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_error(finish(api, owner, "x", late), 400, "oauth_state_invalid")
    forged = {"code": "whatever", "state": "A" * 43}
    assert_error(finish(api, owner, "x", forged), 400, "oauth_state_invalid")
    assert failures(audit_of) == ["reused", "expired", "unknown"]
    assert query(select(Integration.id).where(Integration.workspace_id == owner.workspace_id))


def test_a_state_cannot_change_hands_workspaces_or_networks(
    api: TestClient, owner: Owner, audit_of: AuditOf
) -> None:
    colleague = new_owner(owner.workspace_id, Role.ADMIN)
    assert_error(
        finish(api, colleague, "x", consent(start(api, owner))), 400, "oauth_state_invalid"
    )

    elsewhere = new_owner()
    with service_session() as session:  # the owner belongs to a second workspace as well
        session.add(
            Membership(workspace_id=elsewhere.workspace_id, user_id=owner.user_id, role=Role.OWNER)
        )
    swapped = finish(
        api, owner, "x", consent(start(api, owner)), workspace_id=str(elsewhere.workspace_id)
    )
    assert_error(swapped, 400, "oauth_state_invalid")

    assert_error(
        finish(api, owner, "mastodon", consent(start(api, owner))), 400, "oauth_state_invalid"
    )
    assert failures(audit_of) == ["not_yours", "not_yours", "wrong_provider"]
    assert {e.severity for e in audit_of("oauth.failed")[:2]} == {"high"}
    assert query(select(Integration.id)) == []


def test_a_refused_callback_is_audited_only_where_the_caller_may_be(
    api: TestClient, owner: Owner, audit_of: AuditOf
) -> None:
    """A stranger naming another workspace in a callback (any state will do) wrote an
    ``oauth.failed`` row into that workspace's audit log, as many as it liked. The refusal is
    recorded in the state's own workspace, else in the named one only for a member of it, else
    in none (the operators' view)."""
    stranger = new_owner()
    forged = {"code": "c", "state": "S" * 43}
    named = {"workspace_id": str(owner.workspace_id)}
    assert_error(finish(api, stranger, "x", forged, **named), 400, "oauth_state_invalid")
    [refused] = audit_of("oauth.failed")
    assert refused.workspace_id is None
    assert refused.details["reason"] == "unknown"

    forged = {"code": "c", "state": "T" * 43}
    assert_error(finish(api, owner, "x", forged, **named), 400, "oauth_state_invalid")
    assert audit_of("oauth.failed")[-1].workspace_id == owner.workspace_id  # a member: its own

    # The stranger's own valid state, sent naming the owner's workspace: recorded in the
    # stranger's workspace, where the state belongs.
    swapped = finish(api, stranger, "x", consent(start(api, stranger)), **named)
    assert_error(swapped, 400, "oauth_state_invalid")
    assert audit_of("oauth.failed")[-1].workspace_id == stranger.workspace_id


def test_a_code_without_its_pkce_verifier_is_refused_by_the_network_and_audited(
    api: TestClient, owner: Owner, audit_of: AuditOf, sandbox: SandboxClient
) -> None:
    # Code injection: a code obtained in another flow (another challenge) under this state.
    mine, theirs = start(api, owner), start(api, owner)
    injected = {"code": consent(theirs)["code"], "state": consent(mine)["state"]}
    assert_error(finish(api, owner, "x", injected), 400, "oauth_exchange_refused")

    # The verifier lost: the network refuses a code whose challenge nobody answers.
    flow = consent(start(api, owner))
    with service_session() as session:
        session.execute(update(OAuthState).values(code_verifier_ciphertext=None))
    assert_error(finish(api, owner, "x", flow), 400, "oauth_exchange_refused")
    assert failures(audit_of) == ["exchange_refused", "exchange_refused"]
    assert query(select(Integration.id)) == []


def test_only_owners_and_admins_connect_and_strangers_find_nothing(
    api: TestClient, owner: Owner, audit_of: AuditOf
) -> None:
    member = new_owner(owner.workspace_id, Role.MEMBER)
    params = {"workspace_id": str(owner.workspace_id)}
    assert_error(
        api.get(f"{OAUTH}/x/authorize", params=params, headers=member.headers), 403, "forbidden"
    )
    stranger = new_owner()
    assert_error(
        api.get(f"{OAUTH}/x/authorize", params=params, headers=stranger.headers),
        404,
        "workspace_not_found",
    )
    assert audit_of("access.cross_tenant")
    unknown = api.get(f"{OAUTH}/myspace/authorize", params=params, headers=owner.headers)
    assert_error(unknown, 422, "validation_failed")


@pytest.mark.parametrize(
    ("provider", "revocation"),
    [("x", "revoked"), ("mastodon", "revoked"), ("reddit", "revoked"), ("linkedin", "unsupported")],
)
def test_disconnect_revokes_at_the_network_where_it_can(
    provider: str,
    revocation: str,
    api: TestClient,
    owner: Owner,
    sandbox: SandboxClient,
    audit_of: AuditOf,
) -> None:
    body = finish(api, owner, provider, consent(start(api, owner, provider))).json()
    integration_id = body["integration"]["id"]
    gone = api.delete(f"/api/postiz/integrations/{integration_id}", headers=owner.headers)
    assert gone.status_code == 200, gone.text
    assert gone.json()["revocation"] == revocation
    assert gone.json()["integration"]["status"] == "disabled"
    if revocation == "revoked":
        assert all(t["revoked"] for t in sandbox.tokens(provider))
    (stored,) = query(select(Integration).where(Integration.id == uuid.UUID(integration_id)))
    assert (stored.access_token_ciphertext, stored.refresh_token_ciphertext) == ("", None)
    (event,) = audit_of("credential.delete")
    assert event.details["revocation"] == revocation
    assert_error(
        api.delete(f"/api/postiz/integrations/{uuid.uuid4()}", headers=owner.headers),
        404,
        "integration_not_found",
    )


def test_bluesky_connects_with_an_app_password_checked_at_the_network(
    api: TestClient, owner: Owner, sandbox: SandboxClient, audit_of: AuditOf
) -> None:
    sandbox.create_account("bluesky", handle="alice.bsky.social", password="abcd-efgh-ijkl-mnop")
    url = "/api/postiz/integrations/bluesky/connect"
    wrong = {"identifier": "alice.bsky.social", "app_password": "not-it"}
    assert_error(api.post(url, json=wrong, headers=owner.headers), 400, "credentials_refused")
    assert query(select(Integration.id)) == []
    assert failures(audit_of) == ["credentials_refused"]

    right = {"identifier": "alice.bsky.social", "app_password": "abcd-efgh-ijkl-mnop"}
    made = api.post(url, json=right, headers=owner.headers)
    assert made.status_code == 201, made.text
    assert made.json()["integration"]["handle"] == "alice.bsky.social"
    assert "abcd-efgh" not in made.text
    again = api.post(url, json=right, headers=owner.headers)
    assert (again.status_code, again.json()["reconnected"]) == (200, True)
    assert [e.event_type for e in audit_of("credential.update")] == ["credential.update"] * 2


def test_telegram_and_discord_webhooks_are_checked_at_the_network_before_saving(
    api: TestClient, owner: Owner, sandbox: SandboxClient, audit_of: AuditOf
) -> None:
    bot = sandbox.create_account("telegram", handle="herald_bot")
    token = bot["access_token"]
    url = "/api/postiz/integrations/telegram/connect"
    made = api.post(
        url, json={"bot_token": token, "chat_id": "@herald_news"}, headers=owner.headers
    )
    assert made.status_code == 201, made.text
    assert made.json()["integration"]["handle"] == "herald_news"
    assert token.split(":")[-1] not in made.text
    unknown_bot = {"bot_token": "123456:" + "x" * 30, "chat_id": "@herald_news"}
    assert_error(api.post(url, json=unknown_bot, headers=owner.headers), 400, "credentials_refused")

    hook = sandbox.create_account("discord", handle="Announcements", settings={"channel_id": "42"})
    good = f"https://discord.com/api/webhooks/{hook['account_id']}/{hook['access_token']}"
    url = "/api/postiz/integrations/discord/connect"
    connected = api.post(url, json={"webhook_url": good}, headers=owner.headers)
    assert connected.status_code == 201, connected.text
    assert connected.json()["integration"]["external_account_id"] == hook["account_id"]
    stale = f"https://discord.com/api/webhooks/{hook['account_id']}/not-the-token-at-all"
    assert_error(
        api.post(url, json={"webhook_url": stale}, headers=owner.headers),
        400,
        "credentials_refused",
    )
    assert failures(audit_of) == ["credentials_refused", "credentials_refused"]
    listed = api.get("/api/postiz/integrations", headers=owner.headers).json()["items"]
    assert sorted(i["provider"] for i in listed) == ["discord", "telegram"]


def test_connecting_the_same_account_twice_at_once_answers_each_request_clearly(
    api: TestClient, owner: Owner, sandbox: SandboxClient
) -> None:
    bot = sandbox.create_account("telegram", handle="herald_bot")
    body = {"bot_token": bot["access_token"], "chat_id": "@herald_news"}
    path = "/api/postiz/integrations/telegram/connect"

    answers = race(*[lambda: api.post(path, json=body, headers=owner.headers)] * 2)

    codes = sorted(answer.status_code for answer in answers)
    assert all(code < 500 for code in codes), [a.text for a in answers]
    assert codes[0] < 300
    listed = api.get("/api/postiz/integrations", headers=owner.headers).json()
    assert len([i for i in listed["items"] if i["provider"] == "telegram"]) == 1
    assert bot["access_token"] not in "".join(answer.text for answer in answers)


def test_a_reconnect_landing_while_a_disconnect_revokes_is_not_silently_undone(
    api: TestClient, owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disconnect revokes at the network outside a transaction; a reconnect finishing in
    # that window used to be answered "active" while the disconnect then dropped its tokens
    # (never revoked, so its grant stayed live at the network).
    from herald.connections import accounts

    first = finish(api, owner, "x", consent(start(api, owner, "x")))
    integration_id = first.json()["integration"]["id"]
    again = consent(start(api, owner, "x"))
    revoking, reconnected = threading.Event(), threading.Event()
    real_revoke, revocations = accounts._revoke, []

    def revoke_then_wait(*args: Any, **kwargs: Any) -> str:
        outcome = real_revoke(*args, **kwargs)
        revocations.append(outcome)
        if len(revocations) == 1:  # hold the first revocation until the reconnect is in
            revoking.set()
            assert reconnected.wait(30)
        return outcome

    monkeypatch.setattr(accounts, "_revoke", revoke_then_wait)
    answers: dict[str, Any] = {}
    disconnecting = threading.Thread(
        target=lambda: answers.setdefault(
            "disconnect",
            api.delete(f"/api/postiz/integrations/{integration_id}", headers=owner.headers),
        )
    )
    disconnecting.start()
    assert revoking.wait(30)
    reconnect = finish(api, owner, "x", again)
    reconnected.set()
    disconnecting.join(30)

    assert reconnect.status_code == 200, reconnect.text
    assert answers["disconnect"].status_code == 200, answers["disconnect"].text
    # The disconnect went on to revoke the reconnect's tokens too, then forgot them.
    assert revocations == ["revoked", "revoked"]
    with service_session() as s:
        row = s.get(Integration, uuid.UUID(integration_id))
        assert row is not None
        assert row.status is IntegrationStatus.DISABLED
        assert row.access_token_ciphertext == ""


def test_an_account_disconnected_by_several_requests_at_once_is_audited_once(
    api: TestClient, owner: Owner, audit_of: AuditOf
) -> None:
    connected = finish(api, owner, "x", consent(start(api, owner, "x")))
    path = f"/api/postiz/integrations/{connected.json()['integration']['id']}"

    answers = race(*[lambda: api.delete(path, headers=owner.headers)] * 3)

    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert sorted(answer.json()["revocation"] for answer in answers)[-1] == "revoked"
    assert len(audit_of("credential.delete")) == 1
