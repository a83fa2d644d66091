"""A workspace's connected accounts: list them (never their tokens), connect the networks
that take their own credential instead of OAuth, and disconnect.

Credential connects are validated against the network before anything is stored: a Bluesky
app password opens a session (``createSession``), whose tokens are what Herald keeps.

Disconnecting revokes the token at the network where the adapter can (``revoke``), then
disables the integration and drops its sealed tokens; its posts wait (the dispatcher claims
nothing of a disabled integration) and go again after a reconnect. A revocation the network
refuses or cannot be reached for does not keep the account connected: it is recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import db
from herald.connections.access import Manager, Refused, require
from herald.connections.workspaces import EVERYONE
from herald.models import Integration, IntegrationStatus, TokenRefreshAttempt, utcnow
from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    ProviderError,
    RateLimited,
    TokenSet,
    TransientError,
)
from herald.providers.registry import provider_for
from herald.security import audit
from herald.security.audit import EventType, Outcome, Severity
from herald.security.credentials import open_tokens
from herald.security.crypto import CryptoError, KeyRing
from herald.settings import Settings
from herald.tokens.connect import connect_integration


@dataclass(frozen=True, slots=True)
class IntegrationView:
    integration: Integration
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: datetime | None


def list_integrations(
    session: Session,
    manager: Manager,
    workspace_id: uuid.UUID,
    *,
    provider: str | None = None,
    status: IntegrationStatus | None = None,
) -> list[IntegrationView]:
    """The workspace's integrations with the last refresh error of each (members may read)."""
    require(session, manager, workspace_id, EVERYONE)
    query = select(Integration).where(Integration.workspace_id == workspace_id)
    if provider is not None:
        query = query.where(Integration.provider == provider)
    if status is not None:
        query = query.where(Integration.status == status)
    views = []
    for integration in session.scalars(query.order_by(Integration.created_at, Integration.id)):
        failed = session.scalar(
            select(TokenRefreshAttempt)
            .where(
                TokenRefreshAttempt.integration_id == integration.id,
                TokenRefreshAttempt.error_code.is_not(None),
            )
            .order_by(TokenRefreshAttempt.started_at.desc())
            .limit(1)
        )
        views.append(
            IntegrationView(
                integration,
                failed.error_code if failed else None,
                failed.error_message if failed else None,
                failed.started_at if failed else None,
            )
        )
    return views


def _load(
    session: Session, workspace_id: uuid.UUID, integration_id: uuid.UUID, *, lock: bool = False
) -> Integration:
    statement = select(Integration).where(
        Integration.id == integration_id, Integration.workspace_id == workspace_id
    )
    integration = session.scalar(statement.with_for_update() if lock else statement)
    if integration is None:
        raise Refused(404, "integration_not_found", "no such integration in this workspace")
    return integration


#: Revocations a disconnect makes before it gives up on tokens that keep changing.
_DISCONNECT_ROUNDS = 3


def disconnect(
    settings: Settings,
    keys: KeyRing,
    manager: Manager,
    workspace_id: uuid.UUID,
    integration_id: uuid.UUID,
) -> tuple[Integration, str]:
    """Revoke where the network can, then disable and forget the tokens. Returns the
    integration and what happened at the network: ``revoked``, ``unsupported``, ``failed``
    or ``nothing_to_revoke``.

    The network call is made outside a transaction, so the tokens may change meanwhile (a
    reconnect, a refresh): they are forgotten only if they are still the ones revoked, else
    the new ones are revoked in turn. Otherwise a reconnect landing mid-disconnect would be
    answered "active" while its tokens, never revoked, were dropped."""
    with db.session_scope() as session:
        db.tenant_scope(session, workspace_id)
        require(session, manager, workspace_id)
    for _ in range(_DISCONNECT_ROUNDS):
        with db.session_scope() as session:
            db.tenant_scope(session, workspace_id)
            integration = _load(session, workspace_id, integration_id)
            session.expunge(integration)
        revoked_version = integration.token_version
        revocation = _revoke(settings, keys, integration)
        with db.session_scope() as session:
            db.tenant_scope(session, workspace_id)
            integration = _load(session, workspace_id, integration_id, lock=True)
            gone = not integration.access_token_ciphertext
            if gone and integration.status is IntegrationStatus.DISABLED:
                revocation = "nothing_to_revoke"  # disconnected already (perhaps just now)
            elif integration.token_version != revoked_version:
                continue  # new tokens arrived meanwhile: revoke those too
            else:
                _forget_tokens(session, manager, integration, revocation)
            session.expunge(integration)
        return integration, revocation
    raise Refused(
        409,
        "concurrent_change",
        "the account's tokens kept changing while it was being disconnected; send it again",
    )


def _forget_tokens(
    session: Session, manager: Manager, integration: Integration, revocation: str
) -> None:
    integration.status = IntegrationStatus.DISABLED
    integration.access_token_ciphertext = ""
    integration.refresh_token_ciphertext = None
    integration.token_expires_at = None
    integration.refresh_expires_at = None
    integration.token_version += 1  # a refresh or publish holding the old tokens stops
    integration.refresh_lease_until = None
    integration.refresh_lease_owner = None
    integration.updated_at = utcnow()
    audit.record(
        session,
        EventType.CREDENTIAL_DELETE,
        actor=manager.actor,
        severity=Severity.MEDIUM,
        workspace_id=integration.workspace_id,
        resource_type="integration",
        resource_id=str(integration.id),
        message=f"{integration.provider} account disconnected",
        details={"provider": integration.provider, "revocation": revocation},
    )
    session.flush()


def _revoke(settings: Settings, keys: KeyRing, integration: Integration) -> str:
    if not integration.access_token_ciphertext:
        return "nothing_to_revoke"
    adapter = provider_for(integration.provider, settings)
    revoke = getattr(adapter, "revoke", None)
    if revoke is None:
        return "unsupported"
    try:
        revoke(open_tokens(integration, keys))
    except (ProviderError, CryptoError):
        return "failed"
    return "revoked"


#: The networks that connect with their own credential, and what each asks for.
CREDENTIAL_NETWORKS = {
    "bluesky": "a handle and an app password",
    "telegram": "a bot token and a chat",
    "discord": "an incoming webhook URL",
}


def connect_with_credentials(
    settings: Settings,
    keys: KeyRing,
    manager: Manager,
    workspace_id: uuid.UUID,
    *,
    provider: str,
    credentials: dict[str, str],
) -> tuple[Integration, bool]:
    """Connect ``provider`` with its own credential, checked at the network first: Bluesky
    ``{identifier, app_password}`` (createSession), Telegram ``{bot_token, chat_id}``
    (getMe, getChat), Discord ``{webhook_url}`` (GET the webhook)."""
    with db.session_scope() as session:
        db.tenant_scope(session, workspace_id)
        require(session, manager, workspace_id)
    adapter: Any = provider_for(provider, settings)
    try:
        if provider == "bluesky":
            tokens, account = adapter.login(credentials["identifier"], credentials["app_password"])
        elif provider == "telegram":
            tokens, account = adapter.verify(credentials["bot_token"], credentials["chat_id"])
        elif provider == "discord":
            tokens, account = adapter.verify_webhook(credentials["webhook_url"])
        else:
            raise Refused(404, "provider_not_found", f"{provider!r} does not connect this way")
    except ProviderError as exc:
        # The network said no (or the credential could not even be sent): the user's to fix.
        refused = not isinstance(exc, TransientError | AmbiguousOutcome | RateLimited)
        record_failure(
            manager,
            workspace_id,
            provider,
            "credentials_refused" if refused else "provider_unavailable",
            details={"error_type": type(exc).__name__, "http_status": exc.http_status},
        )
        if refused:
            raise Refused(
                400,
                "credentials_refused",
                f"{provider} did not accept {CREDENTIAL_NETWORKS[provider]}",
                details={"http_status": exc.http_status},
            ) from None
        raise Refused(
            502, "provider_unavailable", f"{provider} could not be reached; try again"
        ) from None
    return save_connection(
        manager, keys, workspace_id, provider=provider, tokens=tokens, account=account
    )


def record_failure(
    manager: Manager,
    workspace_id: uuid.UUID | None,
    provider: str,
    reason: str,
    *,
    denied: bool = False,
    severity: Severity = Severity.MEDIUM,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit a connection that did not happen (``oauth.failed``), in its own transaction: the
    caller raises next."""
    with db.session_scope() as session:
        db.service_scope(session, "audit.record")  # the chain spans every workspace
        audit.record(
            session,
            EventType.OAUTH_FAILED,
            actor=manager.actor,
            outcome=Outcome.DENIED if denied else Outcome.FAILURE,
            severity=severity,
            workspace_id=workspace_id,
            resource_type="connection",
            resource_id=provider,
            message=f"{provider} connection refused: {reason}",
            details={"provider": provider, "reason": reason, **(details or {})},
        )


def save_connection(
    manager: Manager,
    keys: KeyRing,
    workspace_id: uuid.UUID,
    *,
    provider: str,
    tokens: TokenSet,
    account: Account,
    event: EventType = EventType.CREDENTIAL_UPDATE,
) -> tuple[Integration, bool]:
    """Store freshly validated credentials (sealed) on the account's integration, created or
    reconnected (audited as ``credential.update``, and as ``event`` too when it is another, such
    as ``oauth.completed``). Whether the integration existed before."""
    with db.session_scope() as session:
        db.tenant_scope(session, workspace_id)
        existed = session.scalar(
            select(Integration.id).where(
                Integration.workspace_id == workspace_id,
                Integration.provider == provider,
                Integration.external_account_id == account.external_id,
            )
        )
        integration = connect_integration(
            session,
            workspace_id=workspace_id,
            provider=provider,
            account=account,
            tokens=tokens,
            keys=keys,
            actor=manager.actor,  # records the credential.update itself
        )
        if event is not EventType.CREDENTIAL_UPDATE:
            audit.record(
                session,
                event,
                actor=manager.actor,
                severity=Severity.MEDIUM,
                workspace_id=workspace_id,
                resource_type="integration",
                resource_id=str(integration.id),
                message=f"{provider} account connected" + (" again" if existed else ""),
                details={
                    "provider": provider,
                    "reconnect": existed is not None,
                    "token_version": integration.token_version,
                    "scopes": list(tokens.scopes),
                },
            )
        session.flush()
        session.expunge(integration)
    return integration, existed is not None
