"""Retention: history tables purged in bounded batches (beat's ``herald.maintenance.purge``).

Every publish writes an attempt row, every refresh a refresh-attempt row, every alert
transition an outbox row. Kept for ever they would make the claim, the sweep and the windowed
figures slower each month. Rows older than ``HERALD_RETENTION_DAYS`` (90 by default) go:

- ``publish_attempts`` of posts that are settled (published, failed, cancelled): a post still
  in flight or waiting for review keeps its whole history;
- ``token_refresh_attempts`` (one still open that long ago died with its worker);
- ``alert_notifications`` no longer pending (sent, failed, suppressed), by their last attempt;
- ``webhook_deliveries`` no longer pending (sent, failed), by their last attempt;
- ``oauth_states`` expired that long ago (an authorization flow lasts minutes).

Each run deletes at most ``HERALD_RETENTION_BATCH_SIZE`` rows per statement and
``HERALD_RETENTION_MAX_BATCHES`` statements per table, committing after each batch, so a first
run over years of history neither holds long locks nor outlives its time limit: the next
tick goes on. What each table lost is counted in ``herald.retention.purged``. The windows of
the figures and alert rules are far shorter than the retention (days, not months).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from herald.db import service_scope
from herald.models import (
    OAuthState,
    Post,
    PostStatus,
    PublishAttempt,
    TokenRefreshAttempt,
    WebhookDelivery,
    utcnow,
)
from herald.models.alert import AlertNotification, NotificationStatus
from herald.models.webhook import DeliveryStatus
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.retention")

SETTLED = (PostStatus.PUBLISHED, PostStatus.FAILED, PostStatus.CANCELLED)
DELIVERED = (NotificationStatus.SENT, NotificationStatus.FAILED, NotificationStatus.SUPPRESSED)
DELIVERIES_DONE = (DeliveryStatus.SENT, DeliveryStatus.FAILED)


def _expired(cutoff: datetime, batch: int) -> dict[str, tuple[type[Any], Select[tuple[Any]]]]:
    """Per table: its model and the ids of one batch of rows past retention."""
    return {
        "publish_attempts": (
            PublishAttempt,
            select(PublishAttempt.id)
            .join(Post, Post.id == PublishAttempt.post_id)
            .where(PublishAttempt.started_at < cutoff, Post.status.in_(SETTLED))
            .limit(batch),
        ),
        "token_refresh_attempts": (
            TokenRefreshAttempt,
            select(TokenRefreshAttempt.id)
            .where(TokenRefreshAttempt.started_at < cutoff)
            .limit(batch),
        ),
        "alert_notifications": (
            AlertNotification,
            select(AlertNotification.id)
            .where(
                AlertNotification.status.in_(DELIVERED),
                AlertNotification.next_attempt_at < cutoff,
            )
            .limit(batch),
        ),
        "webhook_deliveries": (
            WebhookDelivery,
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status.in_(DELIVERIES_DONE),
                WebhookDelivery.next_attempt_at < cutoff,
            )
            .limit(batch),
        ),
        "oauth_states": (
            OAuthState,
            select(OAuthState.id).where(OAuthState.expires_at < cutoff).limit(batch),
        ),
    }


def purge_expired(
    session: Session, settings: Settings, *, now: datetime | None = None
) -> Counter[str]:
    """Delete what is past retention, batch by batch, committing each; counts by table."""
    cutoff = (now or utcnow()) - timedelta(days=settings.retention_days)
    purged: Counter[str] = Counter()
    for table, (model, ids) in _expired(cutoff, settings.retention_batch_size).items():
        for _ in range(settings.retention_max_batches):
            service_scope(session, "retention_purge")  # per transaction: each batch commits
            result = session.execute(
                delete(model)
                .where(model.id.in_(ids.scalar_subquery()))
                .execution_options(synchronize_session=False)
            )
            assert isinstance(result, CursorResult)
            session.commit()
            if result.rowcount:
                purged[table] += result.rowcount
                metrics.retention_purged.add(result.rowcount, {"table": table})
            if result.rowcount < settings.retention_batch_size:
                break
    if purged:
        log.info("retention.purged", cutoff=cutoff.isoformat(), **purged)
    return purged
