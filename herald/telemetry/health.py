"""Herald's health: one report for ``GET /api/postiz/monitoring/health`` and ``herald health``.

The report reads the database and the broker once (:func:`~herald.telemetry.state.take_reading`)
and the last hour's publish figures (:mod:`herald.telemetry.figures`); it never waits on a
worker. Whether a queue is consumed
is the age of its last heartbeat round trip.

The verdict, with a reason for every step down:

- ``unhealthy`` (HTTP 503): the database or the broker does not answer, or no worker has
  consumed a heartbeat on a queue the publishing flow needs (``default`` runs the dispatcher,
  ``publish`` the posts) within ``HERALD_HEARTBEAT_MAX_AGE_S``;
- ``degraded``: another queue is not consumed, a periodic job has not succeeded within
  ``HERALD_JOB_OVERDUE_INTERVALS`` of its intervals, a due post has waited longer than
  ``HERALD_HEARTBEAT_MAX_AGE_S`` for the dispatcher, or a critical alert is open;
- ``healthy`` otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.models import AlertStatus, JobRun, Severity, utcnow
from herald.settings import Settings
from herald.telemetry.broker import Connect
from herald.telemetry.figures import PUBLISH_SUCCESS, Window, compute
from herald.telemetry.state import Reading, State, sorted_queues, take_reading

#: Queues without which no post goes out: the dispatcher's and the publisher's.
ESSENTIAL_QUEUES = frozenset({"default", "publish"})
PUBLISH_WINDOW = timedelta(hours=1)

Status = Literal["healthy", "degraded", "unhealthy"]


class Reachability(BaseModel):
    reachable: bool
    latency_ms: float | None = Field(description="Round trip of the check; null if unreachable")
    error: str | None = None


class QueueHealth(BaseModel):
    name: str
    length: int | None = Field(description="Messages waiting (null: the broker did not answer)")
    consumed: bool = Field(description="A worker consumed its heartbeat within the max age")
    heartbeat_age_s: float | None = Field(description="Since the last heartbeat was consumed")
    round_trip_s: float | None = Field(description="Beat's send to the worker's start")
    worker: str | None = Field(description="The worker that consumed the last heartbeat")


class PostsHealth(BaseModel):
    by_status: dict[str, int] = Field(
        description="Open statuses in full; final ones within the metrics window"
    )
    due_unqueued: int
    oldest_due_age_s: float


class PublishHealth(BaseModel):
    window_s: int
    attempts: int
    published: int
    failed: int
    failure_rate: float | None
    latency_avg_s: float | None
    latency_p95_s: float | None


class JobHealth(BaseModel):
    job: str
    interval_s: float | None = Field(description="Beat's interval (null: not scheduled here)")
    last_started_at: datetime | None
    last_succeeded_at: datetime | None
    last_failed_at: datetime | None
    last_error: str | None
    expected_since: datetime | None = Field(
        description="When a beat first scheduled the job (null: none has yet)"
    )
    overdue: bool


class AlertsHealth(BaseModel):
    open: int
    by_severity: dict[str, int] = Field(description="Open alerts (any state but resolved)")
    firing_by_severity: dict[str, int]


class HealthReport(BaseModel):
    status: Status
    reasons: list[str] = Field(description="Why the status is not healthy (empty if it is)")
    checked_at: datetime
    workspace_id: uuid.UUID | None = Field(description="The scope of posts, publish and alerts")
    database: Reachability
    broker: Reachability
    queues: list[QueueHealth]
    posts: PostsHealth | None
    publish_last_hour: PublishHealth | None
    jobs: list[JobHealth]
    alerts: AlertsHealth | None


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


def dependencies(reading: Reading) -> tuple[Reachability, Reachability]:
    """The database's and the broker's reachability, as one reading found them."""
    database = Reachability(
        reachable=reading.state is not None,
        latency_ms=_ms(reading.database_latency_s),
        error=reading.database_error,
    )
    broker = Reachability(
        reachable=reading.broker.reachable,
        latency_ms=_ms(reading.broker.latency_s),
        error=reading.broker.error,
    )
    return database, broker


def _queues(reading: Reading, queues: Sequence[str], max_age_s: float) -> list[QueueHealth]:
    state = reading.state
    names = sorted_queues(queues, state) if state else list(queues)
    out = []
    for name in names:
        beat = state.heartbeats.get(name) if state else None
        out.append(
            QueueHealth(
                name=name,
                length=reading.broker.queue_lengths.get(name) if reading.broker.reachable else None,
                consumed=beat is not None and beat.age_s <= max_age_s,
                heartbeat_age_s=beat.age_s if beat else None,
                round_trip_s=beat.round_trip_s if beat else None,
                worker=beat.worker if beat else None,
            )
        )
    return out


def _jobs(
    state: State, intervals: Mapping[str, float], settings: Settings, now: datetime
) -> list[JobHealth]:
    out = []
    for job in sorted({*intervals, *state.jobs}):
        run = state.jobs.get(job) or JobRun(job=job)
        every = intervals.get(job)
        # Overdue: no success for more than the allowance, counted from the last success or,
        # for a job that never succeeded, from when a beat first scheduled it. A job no beat
        # has scheduled yet is not judged here (no heartbeats then: its queues are unconsumed).
        since = run.last_succeeded_at or run.expected_since
        overdue = (
            every is not None
            and since is not None
            and (now - since).total_seconds() > every * settings.job_overdue_intervals
        )
        out.append(
            JobHealth(
                job=job,
                interval_s=every,
                last_started_at=run.last_started_at,
                last_succeeded_at=run.last_succeeded_at,
                last_failed_at=run.last_failed_at,
                last_error=run.last_error,
                expected_since=run.expected_since,
                overdue=overdue,
            )
        )
    return out


def _alerts(state: State) -> AlertsHealth:
    by_severity = dict.fromkeys((s.value for s in Severity), 0)
    firing = dict(by_severity)
    for (alert_state, severity), count in state.alerts.items():
        by_severity[severity.value] += count
        if alert_state == AlertStatus.FIRING:
            firing[severity.value] += count
    return AlertsHealth(
        open=sum(by_severity.values()), by_severity=by_severity, firing_by_severity=firing
    )


def publish_last_hour(
    session: Session, now: datetime, workspace_id: uuid.UUID | None
) -> PublishHealth:
    """Every provider together, from the publish figures of the last hour."""
    window = Window(now - PUBLISH_WINDOW, now)

    def value(name: str) -> float | None:
        [sample] = compute(session, name, window, workspace_id=workspace_id)
        return sample.value

    by_outcome = {
        s.labels["outcome"]: s.count
        for s in compute(
            session, "publish.attempts", window, workspace_id=workspace_id, group_by=["outcome"]
        )
    }
    published = sum(n for outcome, n in by_outcome.items() if outcome in PUBLISH_SUCCESS)
    finished = sum(n for outcome, n in by_outcome.items() if outcome)  # "": still running
    return PublishHealth(
        window_s=int(PUBLISH_WINDOW.total_seconds()),
        attempts=sum(by_outcome.values()),
        published=published,
        failed=finished - published,
        failure_rate=value("publish.failure_rate"),
        latency_avg_s=value("publish.latency_avg_s"),
        latency_p95_s=value("publish.latency_p95_s"),
    )


def _verdict(report: HealthReport, settings: Settings) -> tuple[Status, list[str]]:
    grave: list[str] = []
    minor: list[str] = []
    if not report.database.reachable:
        grave.append("the database does not answer")
    if not report.broker.reachable:
        grave.append("the broker does not answer")
    for queue in report.queues:
        if not queue.consumed:
            reason = f"no worker consumed queue {queue.name!r} within the heartbeat max age"
            (grave if queue.name in ESSENTIAL_QUEUES else minor).append(reason)
    minor += [f"periodic job {job.job} is overdue" for job in report.jobs if job.overdue]
    if report.posts and report.posts.oldest_due_age_s > settings.heartbeat_max_age_s:
        minor.append(f"a due post has waited {report.posts.oldest_due_age_s:.0f} s to be queued")
    if report.alerts and report.alerts.by_severity.get(Severity.CRITICAL.value):
        minor.append("a critical alert is open")
    if grave:
        return "unhealthy", grave + minor
    return ("degraded", minor) if minor else ("healthy", [])


def check_health(
    settings: Settings,
    connect: Connect,
    queues: Sequence[str],
    job_intervals: Mapping[str, float],
    *,
    workspace_id: uuid.UUID | None = None,
) -> HealthReport:
    """Read everything once and judge it (see the module docstring for the rules)."""
    reading = take_reading(settings, connect, queues, workspace_id=workspace_id)
    state, now = reading.state, utcnow()
    publish = None
    if state is not None:
        try:
            with db.session_scope() as session:
                db.service_scope(session, "monitoring")
                publish = publish_last_hour(session, now, workspace_id)
        except SQLAlchemyError:
            publish = None  # the database went away between the two reads: reported below
    database, broker = dependencies(reading)
    report = HealthReport(
        status="healthy",
        reasons=[],
        checked_at=now,
        workspace_id=workspace_id,
        database=database,
        broker=broker,
        queues=_queues(reading, queues, settings.heartbeat_max_age_s),
        posts=PostsHealth(
            by_status={status.value: count for status, count in state.posts.items()},
            due_unqueued=state.due_unqueued,
            oldest_due_age_s=state.oldest_due_age_s,
        )
        if state
        else None,
        publish_last_hour=publish,
        jobs=_jobs(state, job_intervals, settings, now) if state else [],
        alerts=_alerts(state) if state else None,
    )
    report.status, report.reasons = _verdict(report, settings)
    return report
