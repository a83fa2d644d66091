"""Token tasks: refresh one integration (single-flight), and beat's sweep of expiring tokens.

| task                               | queue  | payload                     |
| ---------------------------------- | ------ | --------------------------- |
| ``herald.tokens.refresh``          | tokens | :class:`RefreshIntegration` |
| ``herald.tokens.store_refreshed``  | tokens | :class:`StoreRefreshedTokens` (internal) |
| ``herald.tokens.refresh_expiring`` | tokens | none (beat)                 |

Neither sends ``publish``: a refresh makes the posts waiting for it due, and the dispatcher
(the only way into ``publish``) takes them on its next tick.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.exc import OperationalError

from herald.celery_app import app
from herald.contracts import NoArguments, RefreshIntegration, StoreRefreshedTokens
from herald.models import Integration, IntegrationStatus, utcnow
from herald.models.integration import HEALTHY
from herald.providers.registry import provider_class
from herald.security.crypto import KeyRing
from herald.settings import get_settings
from herald.tasks.base import HeraldTask, RetryPolicy
from herald.tokens import refresh as refresh_tokens
from herald.tokens.refresh import RefreshFailed, TokensNotStored, refresh_integration

log = structlog.get_logger("herald.tasks")


#: Storing tokens the network already rotated waits for the database about ten minutes: they
#: exist nowhere else.
STORING = RetryPolicy(
    retry_on=(OperationalError,), max_retries=20, backoff_s=2.0, backoff_max_s=60.0
)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.tokens.refresh",
    scope="service",
    payload_model=RefreshIntegration,
    retry_policy=RetryPolicy(retry_on=(RefreshFailed,), max_retries=4, backoff_s=5.0),
)
def refresh(self: HeraldTask, payload: RefreshIntegration) -> str:
    settings = get_settings()
    try:
        outcome = refresh_integration(
            self.session,
            payload.integration_id,
            settings,
            KeyRing.from_settings(settings),
            seen_version=payload.seen_token_version,
            then_publish=payload.then_publish,
            task_id=self.request.id,
        )
    except TokensNotStored as exc:
        # The network rotated the tokens and the database is away: hand them on, sealed, to
        # be stored when it is back. Never refresh again with the spent token.
        log.error(
            "token.store_deferred", integration_id=str(payload.integration_id), reason=str(exc)
        )
        store_refreshed.apply_async(
            kwargs=exc.deferred.model_dump(mode="json"), countdown=STORING.countdown(0)
        )
        return "deferred"
    return outcome.outcome


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.tokens.store_refreshed",
    scope="service",
    payload_model=StoreRefreshedTokens,
    retry_policy=STORING,
)
def store_refreshed(self: HeraldTask, payload: StoreRefreshedTokens) -> str:
    settings = get_settings()
    outcome = refresh_tokens.store_refreshed(
        self.session, payload, settings, KeyRing.from_settings(settings), task_id=self.request.id
    )
    return outcome.outcome


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.tokens.refresh_expiring",
    scope="service",
    payload_model=NoArguments,
    periodic=True,
)
def refresh_expiring(self: HeraldTask, payload: NoArguments) -> int:
    """Refresh every healthy token that expires within its network's safety margin, and every
    one a publish found refused whose refresh was lost; skip integrations a refresh holds. One
    integration that cannot be handled is logged and skipped: the others still go."""
    settings = get_settings()

    now = utcnow()
    widest = max([settings.token_refresh_margin_s, *settings.token_refresh_margins.values()])
    rows = self.session.execute(
        select(
            Integration.id,
            Integration.provider,
            Integration.token_version,
            Integration.status,
            Integration.token_expires_at,
        ).where(
            Integration.status.in_(HEALTHY),
            or_(
                Integration.status == IntegrationStatus.REFRESH_NEEDED,
                Integration.token_expires_at < now + timedelta(seconds=widest),
            ),
            or_(Integration.refresh_lease_until.is_(None), Integration.refresh_lease_until <= now),
        )
    ).all()
    count = 0
    for integration_id, provider, version, status, expires_at in rows:
        try:
            due = status is IntegrationStatus.REFRESH_NEEDED or (
                expires_at is not None
                and expires_at < now + timedelta(seconds=settings.token_refresh_margin(provider))
            )
            if not due or not provider_class(provider).refreshes_tokens:
                continue
            self.enqueue(
                app.signature(
                    "herald.tokens.refresh",
                    kwargs={"integration_id": str(integration_id), "seen_token_version": version},
                )
            )
        except Exception as exc:  # one bad row must not starve the others
            log.warning(
                "token.refresh_skipped",
                integration_id=str(integration_id),
                provider=provider,
                error_type=type(exc).__name__,
            )
            continue
        count += 1
    return count
