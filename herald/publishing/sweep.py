"""Make crashes harmless (beat's ``sweep_stuck``, on its own ``sweep`` queue).

- A post ``queued`` for longer than ``queued_timeout_s`` lost its message (a broker restart,
  a purge): it is enqueued again. A duplicate message is harmless — only one run can claim it.
- A post ``publishing`` for longer than ``publishing_timeout_s`` lost its worker mid-call: the
  network may or may not have it. It is reconciled (:mod:`herald.publishing.reconcile`):
  published if found, sent again if that is provably safe, else ``needs_review``.
- A post whose pool process a worker saw die (:func:`resolve_lost_process`, run by
  ``herald.posts.reconcile_lost``) is resolved the same way without waiting for that timeout:
  the worker knows the process is gone, and the attempt row names it. So is a post whose
  worker was killed whole, once a worker of the same pid namespace (restarted, or beside it on
  its host) proves the attempt's process gone (:func:`orphaned_attempts`).

Resolving one stuck post is three steps, so no database transaction stays open while the
network is asked:

1. **take** (a short transaction): the next stuck post not leased by another sweep, fewest
   failed resolutions first, then oldest; lease it for the task's hard time limit and count the
   resolution; commit.
2. **look it up** at the network, no transaction open.
3. **record** (a short transaction): a conditional UPDATE that moves the post only if it is
   still ``publishing`` in the attempt the sweep saw (the worker may have finished meanwhile,
   or a retry may have claimed it again).

A resolution that fails — the lookup got no answer, or raised — leaves the post
``publishing`` and out of reach until a backoff passes; after
``sweep_max_resolve_attempts`` of them it goes to ``needs_review`` with the last reason. A
resolution whose sweep died is counted too (the count is taken before the lookup). So one post
costs a bounded amount of work, and a post that keeps failing sorts after those that have not:
it cannot hold the others back. Posts of a provider whose circuit is open wait
(:mod:`herald.publishing.circuit`): a lookup would fail for the same reason.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Select, and_, exists, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from herald.db import service_scope
from herald.models import (
    Integration,
    Post,
    PostStatus,
    PublishAttempt,
    attempts_since_reschedule,
    utcnow,
)
from herald.providers.registry import UnknownProvider, provider_for
from herald.publishing import circuit
from herald.publishing.dispatch import CLAIMED_COLUMNS, Claimed
from herald.publishing.reconcile import Verdict, reconcile
from herald.publishing.transitions import move
from herald.security.crypto import KeyRing
from herald.settings import ProviderNotConfigured, Settings
from herald.telemetry import counters, metrics
from herald.telemetry.context import process_gone
from herald.telemetry.tracing import TraceContext, in_post_trace

log = structlog.get_logger("herald.publishing")

_MAX_RESOLVE_BACKOFF_S = 3600.0
# Open attempts of one namespace read per look: far more than a host's pool processes.
_ORPHANS_PER_LOOK = 1000
#: The event counter of posts sent again because the broker lost everything it held.
BROKER_LOST_MESSAGES = "broker.messages_lost"


def requeue_lost(
    session: Session, settings: Settings, *, broker_emptied: bool = False
) -> list[Claimed]:
    """Queued posts whose message is presumed lost; the caller enqueues after commit, then
    confirms the sends (:func:`herald.publishing.dispatch.confirm_sent`).

    Lost, as ``herald_posts_resent_total`` counts them by reason: sent more than
    ``queued_timeout_s`` ago and not run, or its send failed (``message_lost``); sent at any
    time before the broker was seen emptied (``broker_emptied``: :mod:`herald.broker.restarts`);
    claimed more than ``send_timeout_s`` ago and never confirmed sent, its dispatcher (or a
    sweep) dead between its commit and its sends (``never_sent``)."""
    service_scope(session, "sweep_stuck")
    now = utcnow()
    sent_before = (
        Post.queued_at.is_not(None)
        if broker_emptied
        else Post.queued_at < now - timedelta(seconds=settings.queued_timeout_s)
    )
    never_sent = and_(
        Post.queued_at.is_(None),
        Post.updated_at < now - timedelta(seconds=settings.send_timeout_s),
    )
    # Each taken post's updated_at becomes now, so the second never takes the first's again.
    lost = _take_queued(session, sent_before, now)
    unsent = _take_queued(session, never_sent, now)
    metrics.posts_resent.add(
        len(lost), {"reason": "broker_emptied" if broker_emptied else "message_lost"}
    )
    metrics.posts_resent.add(len(unsent), {"reason": "never_sent"})
    if broker_emptied and lost:  # the default rule "Broker lost messages" reads this
        counters.increment(session, BROKER_LOST_MESSAGES, len(lost))
    if lost or unsent:
        log.warning("sweep.requeued", count=len(lost) + len(unsent), never_sent=len(unsent))
    return lost + unsent


def _take_queued(session: Session, which: ColumnElement[bool], now: datetime) -> list[Claimed]:
    """The queued posts matching ``which``, marked as to be sent again (``queued_at`` empty
    until the send is confirmed)."""
    rows = session.execute(
        update(Post)
        .where(Post.status == PostStatus.QUEUED, which)
        .values(queued_at=None, updated_at=now)
        .returning(*CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return [Claimed.of(row) for row in rows]


@dataclass(frozen=True, slots=True)
class _Stuck:
    """A stuck post taken by this sweep: detached rows, and what the verdict is guarded by."""

    post: Post
    integration: Integration
    attempt_number: int  # the publish attempt whose worker was lost
    resolution: int  # this resolution's number (1 = the first)


def resolve_dead_workers(
    session: Session,
    settings: Settings,
    keys: KeyRing,
    *,
    limit: int | None = None,
) -> Counter[str]:
    """Resolve posts stuck in ``publishing``, one at a time (see the module docstring).

    Stops after ``limit`` posts (``sweep_batch_size``) or half the task's soft time limit, so
    the run ends cleanly and the next tick goes on. Returns counts by result.
    """
    budget_ends = time.monotonic() + settings.task_soft_time_limit_s / 2
    results: Counter[str] = Counter()
    for _ in range(limit or settings.sweep_batch_size):
        if time.monotonic() > budget_ends:
            break
        stuck = _take_next(session, settings)
        if stuck is None:
            break
        results[_resolve_traced(session, stuck, settings, keys)] += 1
    if results:
        log.warning("sweep.resolved", **results)
    return results


def resolve_lost_process(
    session: Session, settings: Settings, keys: KeyRing, post_id: uuid.UUID, process: str
) -> str | None:
    """Resolve ``post_id`` now if its open attempt was run by ``process``
    (:func:`~herald.telemetry.context.process_name`), which a worker saw die; as the sweep
    would after ``publishing_timeout_s``. None when there is nothing to resolve: the attempt
    was finished, the post moved on, another process claimed it since, another resolution
    holds it, or its network's circuit is open (the sweep takes it later).

    The caller waits for one call's timeout after the death first: a request the process sent
    just before it died may still be in the network's hands, as after a timeout in a live
    run."""
    stuck = _take_next(session, settings, lost=(post_id, process))
    if stuck is None:
        return None
    result = _resolve_traced(session, stuck, settings, keys)
    log.warning("sweep.lost_process_resolved", post_id=str(post_id), result=result)
    return result


@dataclass(frozen=True, slots=True)
class Orphan:
    """A post ``publishing`` in an open attempt whose process is proven gone."""

    post_id: uuid.UUID
    process: str  # the attempt's ``worker``
    correlation_id: str | None
    workspace_id: uuid.UUID
    task_id: str | None = None  # the message its run was for
    started_at: datetime | None = None  # when its run claimed the post


def orphaned_attempts(session: Session, namespace: str) -> list[Orphan]:
    """Each post ``publishing`` in an open attempt whose process ran in pid namespace
    ``namespace`` (this process's :data:`~herald.telemetry.context.PID_NAMESPACE`) and is gone:
    a worker killed whole took its pool processes with it, and nothing saw them die. For
    :func:`resolve_lost_process`; a process that cannot be proven gone (another namespace, its
    pid taken again) is left to the sweep's timeout."""
    service_scope(session, "reap_orphans")
    rows = session.execute(
        select(
            PublishAttempt.post_id,
            PublishAttempt.worker,
            PublishAttempt.correlation_id,  # the run's (its message's, else the post's)
            Post.workspace_id,
            PublishAttempt.task_id,
            PublishAttempt.started_at,
        )
        .join(
            Post,
            (Post.id == PublishAttempt.post_id) & (Post.attempts == PublishAttempt.attempt_number),
        )
        .where(
            Post.status == PostStatus.PUBLISHING,
            PublishAttempt.finished_at.is_(None),
            PublishAttempt.process_ns == namespace,
        )
        .order_by(Post.publishing_started_at)
        .limit(_ORPHANS_PER_LOOK)
    ).all()
    session.commit()
    return [Orphan(*row) for row in rows if row.worker and process_gone(row.worker)]


def _resolve_traced(session: Session, stuck: _Stuck, settings: Settings, keys: KeyRing) -> str:
    post = stuck.post
    with in_post_trace(
        "herald.reconcile_post",
        post_id=str(post.id),
        correlation_id=post.correlation_id,
        workspace_id=str(post.workspace_id),
        stored=TraceContext.stored(post.traceparent, post.tracestate),
    ):
        result = _resolve(session, stuck, settings, keys)
    metrics.sweep_resolutions.add(1, {"provider": stuck.integration.provider, "result": result})
    return result


def _take_next(
    session: Session, settings: Settings, *, lost: tuple[uuid.UUID, str] | None = None
) -> _Stuck | None:
    while True:
        service_scope(session, "sweep_stuck")
        row = session.execute(_next_stuck(session, settings, lost)).first()
        if row is None:
            session.commit()
            return None
        post, integration = row[0], row[1]
        stuck = _Stuck(post, integration, post.attempts, post.resolve_attempts + 1)
        # The lease outlives this sweep's task (hard time limit), so no other sweep takes the
        # post while this one may still be asking; the count is taken now, so a sweep that
        # dies counts too.
        leased = session.execute(
            update(Post)
            .where(Post.id == post.id, Post.resolve_attempts == post.resolve_attempts)
            .values(
                resolve_attempts=stuck.resolution,
                resolve_after=utcnow() + timedelta(seconds=settings.task_time_limit_s),
            )
            .execution_options(synchronize_session=False)
        )
        assert isinstance(leased, CursorResult)
        session.expunge(post)
        session.expunge(integration)
        session.commit()
        if leased.rowcount == 1:
            return stuck
        # Another sweep took it first (SQLite has no row locks): take the next one.


def _next_stuck(
    session: Session, settings: Settings, lost: tuple[uuid.UUID, str] | None
) -> Select[tuple[Post, Integration]]:
    now = utcnow()
    if lost is None:
        stuck = Post.publishing_started_at < now - timedelta(seconds=settings.publishing_timeout_s)
    else:
        post_id, process = lost
        stuck = (Post.id == post_id) & exists().where(
            PublishAttempt.post_id == Post.id,
            PublishAttempt.attempt_number == Post.attempts,
            PublishAttempt.worker == process,
            PublishAttempt.finished_at.is_(None),
        )
    query = (
        select(Post, Integration)
        .join(Integration, Integration.id == Post.integration_id)
        .where(
            Post.status == PostStatus.PUBLISHING,
            stuck,
            or_(Post.resolve_after.is_(None), Post.resolve_after <= now),
        )
        # Fewest failed resolutions first: a post that keeps failing never holds others back.
        .order_by(Post.resolve_attempts, Post.publishing_started_at)
        .limit(1)
        .with_for_update(of=Post, skip_locked=True)
    )
    held = circuit.held_providers(session, settings, now)
    return query.where(Integration.provider.not_in(held)) if held else query


def _resolve(session: Session, stuck: _Stuck, settings: Settings, keys: KeyRing) -> str:
    post, integration = stuck.post, stuck.integration
    if stuck.resolution > settings.sweep_max_resolve_attempts:
        # Earlier sweeps died or timed out on this post: stop spending work on it.
        return _give_up(session, stuck, "earlier resolutions did not finish")
    assert post.publishing_started_at is not None
    try:
        provider = provider_for(integration.provider, settings)
        verdict = reconcile(provider, post, integration, keys, since=post.publishing_started_at)
    except SoftTimeLimitExceeded:
        raise  # the task's own deadline: the lease and the count already hold the post
    except (UnknownProvider, ProviderNotConfigured) as exc:
        return _failed(session, stuck, settings, str(exc))
    except Exception as exc:
        # One post that cannot be resolved must not stop the sweep for the others. Only the
        # type is stored: an unexpected error's text may carry what a row must not.
        log.exception("sweep.resolve_failed", post_id=str(post.id))
        return _failed(session, stuck, settings, f"the resolution raised {type(exc).__name__}")
    if verdict.lookup_failed:
        return _failed(session, stuck, settings, verdict.reason)
    return _record(session, stuck, verdict, settings)


def _failed(session: Session, stuck: _Stuck, settings: Settings, reason: str) -> str:
    """A resolution that settled nothing: back off, or give up after the bound."""
    if stuck.resolution >= settings.sweep_max_resolve_attempts:
        return _give_up(session, stuck, reason)
    service_scope(session, "sweep_stuck")
    backoff = min(
        settings.sweep_resolve_backoff_s * 2 ** (stuck.resolution - 1), _MAX_RESOLVE_BACKOFF_S
    )
    session.execute(
        update(Post)
        .where(*_unchanged(stuck))
        .values(
            resolve_after=utcnow() + timedelta(seconds=backoff),
            last_error_code="resolve_failed",
            last_error_message=(
                f"worker lost mid-publish; resolution {stuck.resolution} of "
                f"{settings.sweep_max_resolve_attempts} failed: {reason}"
            ),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    log.warning(
        "sweep.resolution_failed",
        post_id=str(stuck.post.id),
        resolution=stuck.resolution,
        reason=reason,
        retry_in_s=backoff,
    )
    return "resolve_failed"


def _give_up(session: Session, stuck: _Stuck, reason: str) -> str:
    return _to_review(session, stuck, f"gave up after {stuck.resolution} resolutions ({reason})")


def _to_review(session: Session, stuck: _Stuck, why: str) -> str:
    return _settle(
        session,
        stuck,
        PostStatus.NEEDS_REVIEW,
        "needs_review",
        last_error_code="worker_lost",
        last_error_message=f"worker lost mid-publish; {why}: check the account before retrying",
    )


def _record(session: Session, stuck: _Stuck, verdict: Verdict, settings: Settings) -> str:
    if verdict.found is not None:
        return _settle(
            session,
            stuck,
            PostStatus.PUBLISHED,
            "reconciled",
            external_id=verdict.found.external_id,
            external_url=verdict.found.url,
            published_at=utcnow(),
        )
    budget_left = attempts_since_reschedule(stuck.post) < settings.publish_max_attempts
    if verdict.safe_to_retry and budget_left:
        return _settle(
            session,
            stuck,
            PostStatus.RETRYING,
            "retry",
            next_attempt_at=utcnow(),
            last_error_code="worker_lost",
            last_error_message=f"worker lost mid-publish; {verdict.reason}",
        )
    return _to_review(session, stuck, verdict.reason)


def _settle(session: Session, stuck: _Stuck, to: PostStatus, outcome: str, **values: Any) -> str:
    """Move the post out of ``publishing`` if it is still in the attempt the sweep saw, and
    close that attempt as ``worker_lost``."""
    service_scope(session, "sweep_stuck")
    now = utcnow()
    won = move(
        session,
        stuck.post.id,
        from_=PostStatus.PUBLISHING,
        to=to,
        site="sweep",
        only_if=[Post.attempts == stuck.attempt_number],
        resolve_after=None,
        **values,
    )
    if won:
        session.execute(
            update(PublishAttempt)
            .where(
                PublishAttempt.post_id == stuck.post.id,
                PublishAttempt.attempt_number == stuck.attempt_number,
                PublishAttempt.finished_at.is_(None),
            )
            .values(
                finished_at=now,
                outcome=outcome,
                error_code="worker_lost",
                error_message="the worker stopped before recording the outcome",
            )
            .execution_options(synchronize_session=False)
        )
    session.commit()
    if won and to is PostStatus.PUBLISHED:
        metrics.observe_published(stuck.integration.provider, stuck.post.scheduled_at, now)
    log.info("sweep.post", post_id=str(stuck.post.id), verdict=outcome, won=won)
    return outcome if won else "superseded"


def _unchanged(stuck: _Stuck) -> tuple[ColumnElement[bool], ...]:
    """Conditions that hold while the post is still stuck in the attempt the sweep took."""
    return (
        Post.id == stuck.post.id,
        Post.status == PostStatus.PUBLISHING,
        Post.attempts == stuck.attempt_number,
    )
