"""Refresh one integration's tokens, single-flight.

The integration row is locked (``SELECT … FOR UPDATE``) for the refresh, so two workers that
both saw an expired token make one call to the network: the second finds the token version
moved on and uses the new token. That matters because X, Discord and Bluesky rotate refresh
tokens and treat reuse of a spent one as theft (revoking the whole grant).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import structlog
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.db import session_scope
from herald.models import Integration, IntegrationStatus, TokenRefreshAttempt, utcnow
from herald.providers.base import AuthExpired, ProviderError, ReauthRequired
from herald.providers.registry import UnknownProvider, provider_for
from herald.security.credentials import account_of, open_tokens, store_tokens
from herald.security.crypto import DecryptionError, KeyRing
from herald.settings import Settings
from herald.telemetry import context, metrics

log = structlog.get_logger("herald.tokens")


class RefreshFailed(Exception):
    """A refresh that may succeed later (network trouble, rate limit): retried by the task."""


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    refreshed: bool
    status: IntegrationStatus
    reason: str


def refresh_integration(
    session: Session,
    integration_id: uuid.UUID,
    settings: Settings,
    keys: KeyRing,
    *,
    seen_version: int | None = None,
    task_id: str | None = None,
) -> RefreshOutcome:
    integration = session.scalar(
        # FOR NO KEY UPDATE: the attempt row (another connection) may still reference this row.
        select(Integration).where(Integration.id == integration_id).with_for_update(key_share=True)
    )
    if integration is None:
        return RefreshOutcome(False, IntegrationStatus.DISABLED, "no such integration")
    if integration.status in (IntegrationStatus.NEEDS_REAUTH, IntegrationStatus.DISABLED):
        return RefreshOutcome(False, integration.status, "integration needs the user")
    if seen_version is not None and integration.token_version > seen_version:
        return RefreshOutcome(True, integration.status, "already refreshed by another worker")

    try:
        provider = provider_for(integration.provider, settings)
    except UnknownProvider:
        return RefreshOutcome(False, integration.status, "no adapter for this provider")
    attempt_id = _open_attempt(integration, task_id)
    started = time.perf_counter()
    outcome = "refreshed"
    error: Exception | None = None
    try:
        tokens = provider.refresh(account_of(integration), open_tokens(integration, keys))
        store_tokens(integration, tokens, keys)
        integration.status = IntegrationStatus.ACTIVE
        integration.refresh_failure_count = 0
    except (ReauthRequired, AuthExpired, DecryptionError) as exc:
        outcome, error = "reauth_required", exc
        integration.status = IntegrationStatus.NEEDS_REAUTH
        integration.refresh_failure_count += 1
    except ProviderError as exc:
        outcome, error = "failed", exc
        integration.refresh_failure_count += 1
    latency_ms = round((time.perf_counter() - started) * 1000)

    attempt = session.get(TokenRefreshAttempt, attempt_id)
    assert attempt is not None
    attempt.finished_at = utcnow()
    attempt.latency_ms = latency_ms
    attempt.outcome = outcome
    attempt.token_version_after = integration.token_version
    if error is not None:
        attempt.error_code = getattr(error, "code", "token_unreadable")
        attempt.error_message = str(error)[:2000]
    metrics.token_refreshes.add(1, {"provider": integration.provider, "outcome": outcome})
    log.info(
        "token.refresh",
        integration_id=str(integration.id),
        provider=integration.provider,
        outcome=outcome,
        token_version=integration.token_version,
        latency_ms=latency_ms,
    )
    status = integration.status
    session.commit()
    if outcome == "failed":
        raise RefreshFailed(str(error))
    return RefreshOutcome(outcome == "refreshed", status, outcome)


def _open_attempt(integration: Integration, task_id: str | None) -> uuid.UUID:
    """The attempt row, committed on its own before the network is called."""
    span = trace.get_current_span().get_span_context()
    attempt = TokenRefreshAttempt(
        workspace_id=integration.workspace_id,
        integration_id=integration.id,
        provider=integration.provider,
        token_version_before=integration.token_version,
        correlation_id=context.correlation_id(),
        trace_id=format(span.trace_id, "032x") if span.is_valid else None,
        task_id=task_id,
    )
    with session_scope() as own:
        own.add(attempt)
    return attempt.id
