"""What only the database and the broker know, read at once: the source of ``/metrics`` and of
health.

:func:`read_state` makes a handful of small queries, each an index range scan or a primary-key
table of a few rows, so its cost does not grow with history:

- posts per status: open statuses counted whole (bounded by the work in flight), final ones
  (published, failed, cancelled) only for posts scheduled inside
  ``HERALD_METRICS_FINISHED_WINDOW_S`` (``ix_posts_status_scheduled_at``);
- due but not queued, and the oldest due time (the dispatcher's own indexes);
- the heartbeat row of every queue and the run row of every periodic job;
- open alerts by state and severity (``ix_alerts_status_severity``);
- the audit verifier's last result (its job run).

The broker's queue lengths come from :mod:`herald.telemetry.broker`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.models import (
    Alert,
    AlertStatus,
    Heartbeat,
    JobRun,
    Post,
    PostStatus,
    Severity,
    utcnow,
)
from herald.settings import Settings
from herald.telemetry.broker import BrokerProbe, Connect, probe

#: The periodic job that verifies the audit hash chain; its run records the verdict (a run
#: that fails means the chain could not be verified intact).
AUDIT_VERIFY_JOB = "herald.audit.verify_chain"

FINAL_STATUSES = (PostStatus.PUBLISHED, PostStatus.FAILED, PostStatus.CANCELLED)
OPEN_STATUSES = tuple(status for status in PostStatus if status not in FINAL_STATUSES)
OPEN_ALERT_STATES = tuple(state for state in AlertStatus if state != AlertStatus.RESOLVED)


@dataclass(frozen=True, slots=True)
class QueueBeat:
    queue: str
    age_s: float
    round_trip_s: float
    worker: str


@dataclass(frozen=True, slots=True)
class Reading:
    """The state (None when the database did not answer), the database's round-trip time,
    and what the broker said."""

    state: State | None
    database_latency_s: float | None
    database_error: str | None
    broker: BrokerProbe


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    verified_at: datetime
    ok: bool


@dataclass(frozen=True, slots=True)
class State:
    """One reading of the system's durable state (a workspace's share of it, when scoped)."""

    read_at: datetime
    posts: dict[PostStatus, int]
    due_unqueued: int
    oldest_due_at: datetime | None
    heartbeats: dict[str, QueueBeat]
    jobs: dict[str, JobRun]
    alerts: dict[tuple[AlertStatus, Severity], int]
    audit: AuditVerdict | None
    workers_seen: int

    @property
    def oldest_due_age_s(self) -> float:
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (self.read_at - self.oldest_due_at).total_seconds())


def _scoped(statement: Select[Any], workspace_id: uuid.UUID | None) -> Select[Any]:
    return statement if workspace_id is None else statement.where(Post.workspace_id == workspace_id)


def post_counts(
    session: Session, settings: Settings, now: datetime, workspace_id: uuid.UUID | None
) -> dict[PostStatus, int]:
    counts = dict.fromkeys(PostStatus, 0)
    since = now - timedelta(seconds=settings.metrics_finished_window_s)
    queries = (
        select(Post.status, func.count()).where(Post.status.in_(OPEN_STATUSES)),
        select(Post.status, func.count()).where(
            Post.status.in_(FINAL_STATUSES), Post.scheduled_at >= since
        ),
    )
    for query in queries:
        scoped = _scoped(query, workspace_id).group_by(Post.status)
        for status, count in session.execute(scoped).tuples():
            counts[status] = count
    return counts


def due_posts(
    session: Session, now: datetime, workspace_id: uuid.UUID | None
) -> tuple[int, datetime | None]:
    """Posts whose time has come that the dispatcher has not queued yet, and the oldest."""
    total, oldest = 0, None
    for status, column in (
        (PostStatus.SCHEDULED, Post.scheduled_at),
        (PostStatus.RETRYING, Post.next_attempt_at),
    ):
        query = select(func.count(), func.min(column)).where(Post.status == status, column <= now)
        count, first = session.execute(_scoped(query, workspace_id)).one()
        total += count
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return total, oldest


def _alerts(
    session: Session, workspace_id: uuid.UUID | None
) -> dict[tuple[AlertStatus, Severity], int]:
    counts: dict[tuple[AlertStatus, Severity], int] = {
        (state, severity): 0 for state in OPEN_ALERT_STATES for severity in Severity
    }
    query = select(Alert.status, Alert.severity, func.count()).where(
        Alert.status.in_(OPEN_ALERT_STATES)
    )
    if workspace_id is not None:
        # A workspace sees its own alerts and the system-wide ones that concern everybody.
        query = query.where((Alert.workspace_id == workspace_id) | Alert.workspace_id.is_(None))
    for state, severity, count in session.execute(
        query.group_by(Alert.status, Alert.severity)
    ).tuples():
        counts[(state, severity)] = count
    return counts


def _audit(jobs: dict[str, JobRun]) -> AuditVerdict | None:
    run = jobs.get(AUDIT_VERIFY_JOB)
    if run is None:
        return None
    succeeded, failed = run.last_succeeded_at, run.last_failed_at
    if succeeded is None and failed is None:
        return None
    if failed is None or (succeeded is not None and succeeded >= failed):
        assert succeeded is not None
        return AuditVerdict(succeeded, True)
    return AuditVerdict(failed, False)


def read_state(
    session: Session,
    settings: Settings,
    *,
    workspace_id: uuid.UUID | None = None,
) -> State:
    """Read the durable state (posts and alerts limited to ``workspace_id`` when given)."""
    now = utcnow()
    posts = post_counts(session, settings, now, workspace_id)
    due, oldest = due_posts(session, now, workspace_id)
    beats = {
        row.queue: QueueBeat(
            row.queue,
            max(0.0, (now - row.received_at).total_seconds()),
            row.round_trip_s,
            row.worker,
        )
        for row in session.scalars(select(Heartbeat))
    }
    jobs = {row.job: row for row in session.scalars(select(JobRun))}
    fresh = {b.worker for b in beats.values() if b.age_s <= settings.heartbeat_max_age_s}
    return State(
        read_at=now,
        posts=posts,
        due_unqueued=due,
        oldest_due_at=oldest,
        heartbeats=beats,
        jobs=jobs,
        alerts=_alerts(session, workspace_id),
        audit=_audit(jobs),
        workers_seen=len(fresh),
    )


def job_intervals(schedule: dict[str, dict[str, object]]) -> dict[str, float]:
    """Each periodic job's task name and its interval in seconds, from the beat schedule
    (heartbeats excluded: they have their own table)."""
    intervals: dict[str, float] = {}
    for entry in schedule.values():
        task, every = str(entry["task"]), entry["schedule"]
        if task.startswith("herald.monitoring.") or not isinstance(every, int | float):
            continue
        intervals[task] = min(float(every), intervals.get(task, float("inf")))
    return intervals


def sorted_queues(known: Sequence[str], state: State) -> list[str]:
    """The configured queues first, then any other queue a heartbeat was seen on."""
    return [*known, *sorted(q for q in state.heartbeats if q not in known)]


def take_reading(
    settings: Settings,
    connect: Connect,
    queues: Sequence[str],
    *,
    workspace_id: uuid.UUID | None = None,
) -> Reading:
    """Ask the database and the broker, timing each; never raises for one that is down."""
    state, latency, error = None, None, None
    try:
        with db.session_scope() as session:
            db.service_scope(session, "monitoring")  # before the first statement: its engine
            started = time.perf_counter()
            session.execute(text("SELECT 1"))
            latency = time.perf_counter() - started
            state = read_state(session, settings, workspace_id=workspace_id)
    except SQLAlchemyError as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return Reading(state, latency, error, probe(connect, queues))
