"""Token tasks: refresh one integration (single-flight), and beat's sweep of expiring tokens.

| task                               | queue  | payload                     |
| ---------------------------------- | ------ | --------------------------- |
| ``herald.tokens.refresh``          | tokens | :class:`RefreshIntegration` |
| ``herald.tokens.refresh_expiring`` | tokens | none (beat)                 |

Neither sends ``publish``: a refresh makes the posts waiting for it due, and the dispatcher
(the only way into ``publish``) takes them on its next tick.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import or_, select

from herald.celery_app import app
from herald.contracts import NoArguments, RefreshIntegration
from herald.models import Integration, IntegrationStatus, utcnow
from herald.models.integration import HEALTHY
from herald.providers.registry import UnknownProvider, provider_class
from herald.security.crypto import KeyRing
from herald.settings import get_settings
from herald.tasks.base import HeraldTask, RetryPolicy
from herald.tokens.refresh import RefreshFailed, refresh_integration

log = structlog.get_logger("herald.tasks")


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
    outcome = refresh_integration(
        self.session,
        payload.integration_id,
        settings,
        KeyRing.from_settings(settings),
        seen_version=payload.seen_token_version,
        then_publish=payload.then_publish,
        task_id=self.request.id,
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
    """Refresh every healthy token that expires within the safety margin, and every one a
    publish found refused whose refresh was lost; skip integrations a refresh holds."""
    settings = get_settings()

    now = utcnow()
    horizon = now + timedelta(seconds=settings.token_refresh_margin_s)
    rows = self.session.execute(
        select(Integration.id, Integration.provider, Integration.token_version).where(
            Integration.status.in_(HEALTHY),
            or_(
                Integration.status == IntegrationStatus.REFRESH_NEEDED,
                Integration.token_expires_at < horizon,
            ),
            or_(Integration.refresh_lease_until.is_(None), Integration.refresh_lease_until <= now),
        )
    ).all()
    count = 0
    for integration_id, provider, version in rows:
        try:
            refreshes = provider_class(provider).refreshes_tokens
        except UnknownProvider:
            log.warning(
                "token.refresh_skipped", integration_id=str(integration_id), provider=provider
            )
            continue
        if not refreshes:
            continue
        self.enqueue(
            app.signature(
                "herald.tokens.refresh",
                kwargs={"integration_id": str(integration_id), "seen_token_version": version},
            )
        )
        count += 1
    return count
