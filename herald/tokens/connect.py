"""Create or update an integration from freshly obtained credentials.

Called when a user connects an account (OAuth callback, app password, bot token) and by the
demo; the tokens are sealed before they touch the row. A reconnect resumes the posts that
waited for the user (:func:`herald.reauth.reconnected`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import reauth
from herald.models import Integration, IntegrationStatus
from herald.providers.base import Account, TokenSet
from herald.security import audit
from herald.security.audit import SYSTEM, Actor, EventType, Severity
from herald.security.credentials import store_tokens
from herald.security.crypto import KeyRing


def connect_integration(
    session: Session,
    *,
    workspace_id: uuid.UUID,
    provider: str,
    account: Account,
    tokens: TokenSet,
    keys: KeyRing,
    display_name: str | None = None,
    actor: Actor = SYSTEM,
) -> Integration:
    """The integration for (workspace, provider, account), created or re-authorised."""
    integration = session.scalar(
        select(Integration).where(
            Integration.workspace_id == workspace_id,
            Integration.provider == provider,
            Integration.external_account_id == account.external_id,
        )
    )
    created = integration is None
    if integration is None:
        integration = Integration(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            provider=provider,
            external_account_id=account.external_id,
            token_version=0,
            access_token_ciphertext="",
            token_key_id=keys.active,
        )
        session.add(integration)
    previous_status = integration.status
    integration.handle = account.handle
    integration.display_name = display_name or account.handle
    integration.base_url = account.base_url
    integration.settings = dict(account.settings)
    integration.status = IntegrationStatus.ACTIVE
    integration.refresh_failure_count = 0
    integration.rate_limited_until = None
    # A refresh in flight decided on the old tokens; the new ones need none.
    integration.refresh_lease_until = None
    integration.refresh_lease_owner = None
    # A network that sends no refresh token on a reconnect keeps the stored one (store_tokens
    # reseals it): wiping it would strand the connection at the next expiry.
    store_tokens(integration, tokens, keys)
    session.flush()
    audit.record(
        session,
        EventType.CREDENTIAL_UPDATE,
        actor=actor,
        severity=Severity.MEDIUM,
        workspace_id=workspace_id,
        action="integration.connect" if created else "integration.reauthorize",
        resource_type="integration",
        resource_id=str(integration.id),
        message=f"{provider} account connected" if created else f"{provider} account re-authorised",
        details={"provider": provider, "token_version": integration.token_version},
    )
    reauth.reconnected(session, integration, previous_status=previous_status)
    return integration


def account_from(values: dict[str, Any]) -> Account:
    """An Account from an account answer (``account_id``, ``handle``, ``settings``), as the
    sandbox gives one for each account it creates."""
    return Account(
        external_id=str(values["account_id"]),
        handle=values.get("handle"),
        settings=values.get("settings") or {},
    )


def tokens_from(values: dict[str, Any]) -> TokenSet:
    """A TokenSet from an OAuth-style token answer (``access_token``, ``expires_at``…)."""

    def when(key: str) -> datetime | None:
        raw = values.get(key)
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None

    scope = values.get("scope") or ""
    return TokenSet(
        access_token=str(values["access_token"]),
        refresh_token=values.get("refresh_token"),
        expires_at=when("expires_at"),
        refresh_expires_at=when("refresh_expires_at"),
        scopes=tuple(scope.split()) if isinstance(scope, str) else (),
    )
