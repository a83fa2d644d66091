"""Make crashes harmless (beat's ``sweep_stuck``).

- A post ``queued`` for longer than ``queued_timeout_s`` lost its message (a broker restart,
  a purge): it is enqueued again. A duplicate message is harmless — only one run can claim it.
- A post ``publishing`` for longer than ``publishing_timeout_s`` lost its worker mid-call: the
  network may or may not have it. It is reconciled (:mod:`herald.publishing.reconcile`):
  published if found, sent again if that is provably safe, else ``needs_review``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald.db import service_scope
from herald.models import (
    Integration,
    Post,
    PostStatus,
    attempts_since_reschedule,
    transition,
    utcnow,
)
from herald.providers.registry import provider_for
from herald.publishing.dispatch import Claimed
from herald.publishing.publisher import open_attempt
from herald.publishing.reconcile import reconcile
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.publishing")


def requeue_lost(session: Session, settings: Settings) -> list[Claimed]:
    """Queued posts whose message is presumed lost; the caller enqueues after commit."""
    service_scope(session, "sweep_stuck")
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.queued_timeout_s)
    rows = session.execute(
        update(Post)
        .where(Post.status == PostStatus.QUEUED, Post.queued_at < cutoff)
        .values(queued_at=now, updated_at=now)
        .returning(Post.id, Post.correlation_id, Post.workspace_id)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        log.warning("sweep.requeued", count=len(rows))
    return [Claimed(*row) for row in rows]


def resolve_dead_workers(
    session: Session, settings: Settings, keys: KeyRing, *, limit: int = 100
) -> Counter[str]:
    """Reconcile posts stuck in ``publishing``; commits after each. Returns counts by verdict."""
    service_scope(session, "sweep_stuck")
    cutoff = utcnow() - timedelta(seconds=settings.publishing_timeout_s)
    stuck = session.scalars(
        select(Post)
        .where(Post.status == PostStatus.PUBLISHING, Post.publishing_started_at < cutoff)
        .order_by(Post.publishing_started_at)
        .limit(limit)
    ).all()
    results: Counter[str] = Counter()
    for post in stuck:
        try:
            results[_resolve(session, post, settings, keys)] += 1
            session.commit()
        except Exception:
            # One post that cannot be resolved must not stop the sweep for the others.
            session.rollback()
            log.exception("sweep.resolve_failed", post_id=str(post.id))
            results["error"] += 1
        service_scope(session, "sweep_stuck")
    if results:
        log.warning("sweep.resolved", **results)
    return results


def _resolve(session: Session, post: Post, settings: Settings, keys: KeyRing) -> str:
    integration = session.get(Integration, post.integration_id)
    assert integration is not None
    assert post.publishing_started_at is not None
    provider = provider_for(integration.provider, settings)
    verdict = reconcile(provider, post, integration, keys, since=post.publishing_started_at)
    now = utcnow()
    attempt = open_attempt(session, post)
    if attempt is not None:
        attempt.finished_at = now
        attempt.error_code = "worker_lost"
        attempt.error_message = "the worker stopped before recording the outcome"
    if verdict.found is not None:
        won = transition(
            session,
            post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.PUBLISHED,
            external_id=verdict.found.external_id,
            external_url=verdict.found.url,
            published_at=now,
        )
        outcome = "reconciled"
    elif verdict.safe_to_retry and attempts_since_reschedule(post) < settings.publish_max_attempts:
        won = transition(
            session,
            post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.RETRYING,
            next_attempt_at=now,
            last_error_code="worker_lost",
            last_error_message=f"worker lost mid-publish; {verdict.reason}",
        )
        outcome = "retry"
    else:
        won = transition(
            session,
            post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.NEEDS_REVIEW,
            last_error_code="worker_lost",
            last_error_message=(
                f"worker lost mid-publish; {verdict.reason}: check the account before retrying"
            ),
        )
        outcome = "needs_review"
    if attempt is not None:
        attempt.outcome = outcome if won else "superseded"
    if won and verdict.found is not None:
        metrics.observe_published(integration.provider, post.scheduled_at, now)
    log.info("sweep.post", post_id=str(post.id), verdict=outcome, won=won)
    return outcome if won else "superseded"
