"""Connecting an account by OAuth 2: a single-use state, the network's consent, the exchange.

:func:`begin` stores a state bound to the user, the workspace and the network — only its
SHA-256 is kept — with the PKCE verifier sealed beside it (the adapter makes the S256 pair for
the networks that take PKCE), and answers the network's authorize URL: the adapter's
least-privilege scopes and a redirect URI of the network's own, ``<base>/<network>``, so a
code can never be replayed into another network's flow (the mix-up defence).

:func:`finish` is called by the host application with the code and the state the network
redirected the user back with. The state is consumed on first presentation, whatever follows,
and refused (and audited as ``oauth.failed``) when it is unknown, already used, expired, of
another network, or of another user or workspace. The code is then exchanged by the network's
adapter (the one place its token endpoint and PKCE live) and the tokens are stored sealed:
a reconnect updates the existing integration, keeps the refresh token the network did not
resend, and moves its token version on so that posts waiting for a reconnect go again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from herald import db
from herald.connections.access import Manager, Refused, require
from herald.connections.accounts import record_failure, save_connection
from herald.models import Integration, Membership, OAuthState, utcnow
from herald.providers.base import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ReauthRequired,
)
from herald.providers.registry import provider_for
from herald.security import audit
from herald.security.audit import EventType, Severity
from herald.security.crypto import KeyRing, TokenBinding
from herald.settings import Settings

#: The networks that connect through an OAuth consent screen (the others: :mod:`.accounts`).
OAUTH_PROVIDERS = ("discord", "linkedin", "mastodon", "reddit", "threads", "x")
SERVICE_USER = "service_role"  # whom a state started by the service role belongs to


@dataclass(frozen=True, slots=True)
class Started:
    url: str
    provider: str
    redirect_uri: str
    scopes: tuple[str, ...]
    pkce: bool
    expires_at: datetime


def redirect_uri(settings: Settings, provider: str) -> str:
    return f"{settings.oauth_redirect_base_url.rstrip('/')}/{provider}"


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _binding(row: OAuthState) -> TokenBinding:
    return TokenBinding(row.workspace_id, row.provider, f"oauth-state:{row.id}")


def _known(provider: str) -> None:
    if provider not in OAUTH_PROVIDERS:
        raise Refused(
            404,
            "provider_not_found",
            f"{provider!r} does not connect by OAuth",
            details={"oauth_providers": list(OAUTH_PROVIDERS)},
        )


def _scopes(url: str) -> tuple[str, ...]:
    raw = parse_qs(urlsplit(url).query).get("scope", [""])[0]
    return tuple(part for part in raw.replace(",", " ").split() if part)


def begin(
    settings: Settings, keys: KeyRing, manager: Manager, workspace_id: uuid.UUID, provider: str
) -> Started:
    """Open an authorization for ``provider`` in ``workspace_id`` (owners and admins)."""
    _known(provider)
    adapter = provider_for(provider, settings)
    state = secrets.token_urlsafe(32)
    uri = redirect_uri(settings, provider)
    try:
        request = adapter.authorize(uri, state)
    except ProviderError as exc:
        raise Refused(503, "provider_not_configured", exc.message) from None
    expires_at = utcnow() + timedelta(seconds=settings.oauth_state_ttl_s)
    with db.session_scope() as session:
        db.tenant_scope(session, workspace_id)
        require(session, manager, workspace_id)
        row = OAuthState(
            id=uuid.uuid4(),
            state_hash=state_hash(state),
            workspace_id=workspace_id,
            user_id=manager.user_id or SERVICE_USER,
            provider=provider,
            redirect_uri=uri,
            expires_at=expires_at,
        )
        if request.code_verifier:
            row.code_verifier_ciphertext = keys.seal(request.code_verifier, _binding(row))
        session.add(row)
        scopes = _scopes(request.url)
        audit.record(
            session,
            EventType.OAUTH_INITIATED,
            actor=manager.actor,
            workspace_id=workspace_id,
            resource_type="oauth_state",
            resource_id=str(row.id),
            message=f"{provider} authorization started",
            details={"provider": provider, "scopes": list(scopes), "pkce": row.pkce},
        )
    return Started(request.url, provider, uri, scopes, row.pkce, expires_at)


_STATE_REASONS = {
    "unknown": "this authorization is not one Herald started (or it was already used)",
    "reused": "this authorization was already used: start again",
    "expired": "this authorization expired: start again",
    "wrong_provider": "this authorization was started for another network",
    "not_yours": "this authorization was started by someone else or for another workspace",
}


def _refuse_state(
    manager: Manager, workspace_id: uuid.UUID | None, provider: str, reason: str, **details: Any
) -> Refused:
    cross = reason == "not_yours"
    record_failure(
        manager,
        workspace_id,
        provider,
        reason,
        denied=True,
        severity=Severity.HIGH if cross else Severity.MEDIUM,
        details=details,
    )
    message = _STATE_REASONS[reason]
    return Refused(400, "oauth_state_invalid", message, details={"reason": reason})


def _consume(
    manager: Manager, provider: str, state: str, workspace_id: uuid.UUID | None
) -> OAuthState:
    """The state's row, consumed now (single use whatever follows), or a refusal."""
    now = utcnow()
    with db.session_scope() as session:
        # The state names its workspace: found across workspaces, then checked to be the
        # caller's own before anything else reads it.
        db.service_scope(session, "oauth.finish")
        row = session.scalar(select(OAuthState).where(OAuthState.state_hash == state_hash(state)))
        refusal: tuple[str, uuid.UUID | None] | None
        if row is None:
            refusal = ("unknown", None)
        else:
            result = session.execute(
                update(OAuthState)
                .where(OAuthState.id == row.id, OAuthState.consumed_at.is_(None))
                .values(consumed_at=now)
                .execution_options(synchronize_session=False)
            )
            assert isinstance(result, CursorResult)
            if result.rowcount != 1:
                refusal = ("reused", row.workspace_id)
            elif row.expires_at <= now:
                refusal = ("expired", row.workspace_id)
            elif row.provider != provider:
                refusal = ("wrong_provider", row.workspace_id)
            elif row.user_id != (manager.user_id or SERVICE_USER) or (
                workspace_id is not None and workspace_id != row.workspace_id
            ):
                refusal = ("not_yours", row.workspace_id)
            else:
                refusal = None
        session.expunge_all()
    if refusal is not None:
        reason, owner = refusal
        raise _refuse_state(
            manager,
            owner or _named_by_a_member(manager, workspace_id),
            provider,
            reason,
            state_workspace_id=str(owner) if owner else None,
        )
    assert row is not None
    return row


def _named_by_a_member(manager: Manager, workspace_id: uuid.UUID | None) -> uuid.UUID | None:
    """``workspace_id`` if the caller belongs to it, else None: a refused callback of a state
    no workspace owns is audited in the workspace it names only for a member of it (else
    anyone could write rows into any workspace's audit log), and otherwise in none."""
    if workspace_id is None or manager.is_service:
        return workspace_id
    with db.session_scope() as session:
        db.service_scope(session, "oauth.finish")
        member = session.scalar(
            select(Membership.user_id).where(
                Membership.workspace_id == workspace_id, Membership.user_id == manager.user_id
            )
        )
    return workspace_id if member is not None else None


def finish(
    settings: Settings,
    keys: KeyRing,
    manager: Manager,
    provider: str,
    *,
    code: str,
    state: str,
    workspace_id: uuid.UUID | None = None,
) -> tuple[Integration, bool]:
    """Complete an authorization: the integration (created or reconnected) and whether it
    existed before."""
    _known(provider)
    row = _consume(manager, provider, state, workspace_id)
    with db.session_scope() as session:
        db.tenant_scope(session, row.workspace_id)
        require(session, manager, row.workspace_id)
    verifier = (
        keys.open(row.code_verifier_ciphertext, _binding(row))
        if row.code_verifier_ciphertext
        else None
    )
    try:
        tokens, account = provider_for(provider, settings).exchange_code(
            code, row.redirect_uri, verifier
        )
    except ProviderError as exc:
        record_failure(
            manager,
            row.workspace_id,
            provider,
            "exchange_refused"
            if isinstance(exc, PermanentError | ReauthRequired)
            else "exchange_failed",
            details={"error_type": type(exc).__name__, "http_status": exc.http_status},
        )
        if isinstance(exc, ConfigurationError):
            raise Refused(503, "provider_not_configured", exc.message) from None
        if isinstance(exc, PermanentError | ReauthRequired):
            raise Refused(
                400,
                "oauth_exchange_refused",
                f"{provider} refused the authorization code: start again",
                details={"http_status": exc.http_status},
            ) from None
        raise Refused(
            502,
            "provider_unavailable",
            f"{provider} could not be reached to complete the connection; start again",
        ) from None
    return save_connection(
        manager,
        keys,
        row.workspace_id,
        provider=provider,
        tokens=tokens,
        account=account,
        event=EventType.OAUTH_COMPLETED,
    )
