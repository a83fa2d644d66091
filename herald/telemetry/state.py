"""What only the database and the broker know, read at once: the source of ``/metrics`` and of
health.

:func:`read_state` reads the figures of :mod:`herald.telemetry.figures` (the one catalogue of
what is computed in SQL) as they are now, each an index range scan or a read of a table of a
few rows, so its cost does not grow with history:

- posts per status (``queue.posts``): open statuses whole, finished ones (published, failed,
  cancelled) only for posts scheduled inside ``HERALD_METRICS_FINISHED_WINDOW_S``;
- due but not queued, and the oldest one's age (``queue.due_unqueued``,
  ``queue.oldest_due_age_s``);
- workers that consumed a heartbeat within ``HERALD_HEARTBEAT_MAX_AGE_S`` (``workers.seen``);
- open alerts by state and severity (``alerts.open``);
- the audit verifier's last recorded result (the one ``audit.chain_broken`` reads);

and the records beside them: the heartbeat row of every queue and the run row of every
periodic job. The broker's queue lengths come from :mod:`herald.telemetry.broker`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.beat_schedule import HEARTBEAT_TASK
from herald.models import AlertStatus, Heartbeat, JobRun, PostStatus, Severity, utcnow
from herald.settings import Settings
from herald.telemetry.broker import BrokerProbe, Connect, probe
from herald.telemetry.figures import AuditVerdict, Window, compute, last_audit_verdict

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
class State:
    """One reading of the system's durable state (a workspace's share of it, when scoped)."""

    read_at: datetime
    posts: dict[PostStatus, int]
    due_unqueued: int
    oldest_due_age_s: float
    heartbeats: dict[str, QueueBeat]
    jobs: dict[str, JobRun]
    alerts: dict[tuple[AlertStatus, Severity], int]
    audit: AuditVerdict | None
    workers_seen: int


def _count(session: Session, name: str, window: Window, workspace_id: uuid.UUID | None) -> int:
    [sample] = compute(session, name, window, workspace_id=workspace_id)
    return int(sample.value or 0)


def read_state(
    session: Session,
    settings: Settings,
    *,
    workspace_id: uuid.UUID | None = None,
) -> State:
    """Read the durable state (posts and alerts limited to ``workspace_id`` when given)."""
    now = utcnow()
    finished = Window.last(settings.metrics_finished_window_s, now)
    posts = dict.fromkeys(PostStatus, 0)
    for sample in compute(
        session, "queue.posts", finished, workspace_id=workspace_id, group_by=["status"]
    ):
        posts[PostStatus(sample.labels["status"])] = int(sample.value or 0)
    alerts: dict[tuple[AlertStatus, Severity], int] = {
        (state, severity): 0 for state in OPEN_ALERT_STATES for severity in Severity
    }
    for sample in compute(
        session, "alerts.open", finished, workspace_id=workspace_id, group_by=["state", "severity"]
    ):
        key = (AlertStatus(sample.labels["state"]), Severity(sample.labels["severity"]))
        alerts[key] = int(sample.value or 0)
    [oldest] = compute(session, "queue.oldest_due_age_s", finished, workspace_id=workspace_id)
    beats = {
        row.queue: QueueBeat(
            row.queue,
            max(0.0, (now - row.received_at).total_seconds()),
            row.round_trip_s or 0.0,
            row.worker or "unknown",
        )
        for row in session.scalars(select(Heartbeat))
        if row.received_at is not None  # else only expected: no worker consumed it yet
    }
    return State(
        read_at=now,
        posts=posts,
        due_unqueued=_count(session, "queue.due_unqueued", finished, workspace_id),
        oldest_due_age_s=oldest.value or 0.0,
        heartbeats=beats,
        jobs={row.job: row for row in session.scalars(select(JobRun))},
        alerts=alerts,
        audit=last_audit_verdict(session, now),
        workers_seen=_count(
            session, "workers.seen", Window.last(settings.heartbeat_max_age_s, now), None
        ),
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


def heartbeat_queues(schedule: dict[str, dict[str, object]]) -> list[str]:
    """The queues beat sends a heartbeat to, from the beat schedule."""
    queues = set()
    for entry in schedule.values():
        kwargs = entry.get("kwargs")
        if entry["task"] == HEARTBEAT_TASK and isinstance(kwargs, dict) and "queue" in kwargs:
            queues.add(str(kwargs["queue"]))
    return sorted(queues)


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
