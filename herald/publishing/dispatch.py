"""Claim the posts that are due and mark them queued (beat's ``dispatch_due`` tick).

Candidates are locked with ``FOR UPDATE SKIP LOCKED`` (Postgres), so two dispatchers at once
take disjoint sets; the claim itself is a conditional UPDATE, so even without row locks
(SQLite) a post is queued by exactly one of them. The caller enqueues ``publish`` for the
returned ids only after this transaction commits. Posts of a provider whose circuit is open
stay where they are, but for a few probes (:mod:`herald.publishing.circuit`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from herald.db import service_scope
from herald.models import Integration, IntegrationStatus, Post, PostStatus, utcnow
from herald.publishing import circuit
from herald.settings import Settings
from herald.telemetry.tracing import TraceContext

IN_FLIGHT = (PostStatus.QUEUED, PostStatus.PUBLISHING)
DUE_FROM = (PostStatus.SCHEDULED, PostStatus.RETRYING)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A post to publish, with the correlation and trace it was scheduled under (continued by
    publish)."""

    post_id: uuid.UUID
    correlation_id: str | None
    workspace_id: uuid.UUID
    trace: TraceContext | None

    @classmethod
    def of(
        cls, row: Row[tuple[uuid.UUID, str | None, uuid.UUID, str | None, str | None]]
    ) -> Claimed:
        post_id, correlation_id, workspace_id, traceparent, tracestate = row
        return cls(
            post_id, correlation_id, workspace_id, TraceContext.stored(traceparent, tracestate)
        )


#: What a claiming UPDATE returns for each post: the fields of :class:`Claimed`.
CLAIMED_COLUMNS = (
    Post.id,
    Post.correlation_id,
    Post.workspace_id,
    Post.traceparent,
    Post.tracestate,
)


def claim_due_posts(
    session: Session, settings: Settings, *, limit: int | None = None
) -> list[Claimed]:
    service_scope(session, "dispatch_due")
    # Backpressure: while workers are behind, due posts wait here, visibly, rather than pile up
    # as messages (where the sweep would mistake a long wait for a lost message).
    waiting = session.scalar(select(func.count()).where(Post.status == PostStatus.QUEUED)) or 0
    room = settings.dispatch_max_queued - waiting
    if room <= 0:
        return []
    now = utcnow()
    batch = min(limit or settings.dispatch_batch_size, room)
    circuits = circuit.gate(session, settings, now)
    due = _due(now).limit(batch)
    if circuits.held:
        due = due.where(Integration.provider.not_in(circuits.held))
    candidates = list(session.execute(due).all())
    # A provider whose circuit is open sends only probes (at most its bound; see circuit.py).
    for provider, probes in circuits.probes.items():
        candidates += session.execute(
            _due(now).where(Integration.provider == provider).limit(min(probes, batch))
        ).all()
    if not candidates:
        return []
    chosen = _within_caps(session, settings, [(row[0], row[1]) for row in candidates])
    if not chosen:
        return []
    claimed = session.execute(
        update(Post)
        .where(Post.id.in_(chosen), Post.status.in_(DUE_FROM))
        .values(status=PostStatus.QUEUED, queued_at=now, updated_at=now)
        .returning(*CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return [Claimed.of(row) for row in claimed]


def _due(now: datetime) -> Select[tuple[uuid.UUID, str]]:
    """Due posts of unpaused integrations not mid-refresh, oldest first, locked for this
    dispatcher."""
    return (
        select(Post.id, Integration.provider)
        .join(Integration, Integration.id == Post.integration_id)
        .where(
            or_(
                and_(Post.status == PostStatus.SCHEDULED, Post.scheduled_at <= now),
                and_(Post.status == PostStatus.RETRYING, Post.next_attempt_at <= now),
            ),
            or_(Integration.rate_limited_until.is_(None), Integration.rate_limited_until <= now),
            # Mid-refresh (herald.tokens.lease): its posts wait for the new token.
            or_(Integration.refresh_lease_until.is_(None), Integration.refresh_lease_until <= now),
            # Cut off until the user reconnects (herald.reauth): its posts wait, none fails.
            Integration.status != IntegrationStatus.NEEDS_REAUTH,
        )
        .order_by(func.coalesce(Post.next_attempt_at, Post.scheduled_at))
        .with_for_update(of=Post, skip_locked=True, key_share=True)
    )


def _within_caps(
    session: Session, settings: Settings, candidates: list[tuple[uuid.UUID, str]]
) -> list[uuid.UUID]:
    """Keep each provider under ``provider_concurrency`` posts queued or publishing at once."""
    caps = settings.provider_concurrency
    if not caps:
        return [post_id for post_id, _ in candidates]
    in_flight: Counter[str] = Counter(
        dict(
            session.execute(
                select(Integration.provider, func.count())
                .select_from(Post)
                .join(Integration, Integration.id == Post.integration_id)
                .where(Post.status.in_(IN_FLIGHT), Integration.provider.in_(list(caps)))
                .group_by(Integration.provider)
            )
            .tuples()
            .all()
        )
    )
    chosen = []
    for post_id, provider in candidates:
        cap = caps.get(provider)
        if cap is not None and in_flight[provider] >= cap:
            continue
        in_flight[provider] += 1
        chosen.append(post_id)
    return chosen
