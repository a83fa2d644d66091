"""The catalogue of figures computed in SQL: what alert rules, health and the monitoring API read.

A figure is a named measurement over a window ``[start, end)``, for every workspace or one,
split into series by the labels it offers (``provider``, ``queue``, ``task``…) or aggregated
over them. Each series carries its value and ``count``, the number of observations behind the
value (an alert rule's "minimum samples"). Windowed figures read only their window through the
``(started_at)``, ``(provider, started_at)`` and ``(workspace_id, started_at)`` indexes of the
attempt tables; instant figures (queue backlog, heartbeats, job runs, the audit verifier's
last result) read the current state of small or indexed sets at ``end``.

It is the only place these are computed: alert rules, health, ``/metrics`` (through
:mod:`herald.telemetry.state`) and ``GET /api/postiz/monitoring/metrics`` all read it.
The machinery (windows, samples, aggregates, percentiles on both databases) is in
:mod:`herald.telemetry.windows`; this module is the catalogue.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from herald.models import (
    Alert,
    AuditVerification,
    EventCount,
    Heartbeat,
    Integration,
    JobRun,
    Post,
    PostStatus,
    PublishAttempt,
    TokenRefreshAttempt,
    handing_over,
)
from herald.models.alert import OPEN_ALERT_STATUSES
from herald.telemetry.counters import BUCKET_S
from herald.telemetry.windows import (
    Column,
    FigureError,
    Query,
    Sample,
    Source,
    Window,
    aggregate,
    gauge,
    percentile,
    percentile_cont,
    seconds_between,
)

__all__ = [
    "CATALOGUE",
    "FINAL_POST_STATUSES",
    "PUBLISH_OUTCOMES",
    "PUBLISH_SUCCESS",
    "AuditVerdict",
    "Figure",
    "FigureError",
    "Query",
    "Sample",
    "Window",
    "check_query",
    "compute",
    "figure",
    "last_audit_verdict",
    "percentile_cont",
    "seconds_between",
]

# Outcomes of a publish attempt that put the post on the network.
PUBLISH_SUCCESS = ("published", "reconciled")
# Outcomes that send the post round again (the attempt failed, the post is not lost).
PUBLISH_RETRY = ("transient", "rate_limited", "auth_expired", "ambiguous_retry")
# Outcomes that stop the post short of the network until someone acts.
PUBLISH_STOPPED = ("failed", "needs_review", "reauth_required")
#: Every outcome a finished attempt records (``herald_publish_attempts_total``'s outcome label).
PUBLISH_OUTCOMES = (*PUBLISH_SUCCESS, *PUBLISH_RETRY, *PUBLISH_STOPPED)
REFRESH_SUCCESS = "refreshed"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    description: str
    unit: str
    labels: tuple[str, ...]  # what series may be split or filtered by
    per_workspace: bool  # whether it can be computed for one workspace
    compute: Callable[[Session, Query], list[Sample]]
    split: tuple[str, ...]  # how GET /api/postiz/monitoring/metrics splits it
    #: A workspace's share counts rows of no workspace too (system-wide alerts): computed in
    #: the service scope, the figure filtering by workspace itself, since the workspace's
    #: row-level security hides those rows.
    system_rows: bool = False


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """The audit chain verifier's last recorded result (``audit_verifications``)."""

    verified_at: datetime
    ok: bool


# -- sources ---------------------------------------------------------------------------------------

_PUBLISH = Source(
    PublishAttempt.started_at,
    PublishAttempt.workspace_id,
    {
        "provider": PublishAttempt.provider,
        "workspace_id": PublishAttempt.workspace_id,
        "outcome": PublishAttempt.outcome,
        "code": PublishAttempt.error_code,
    },
)
_REFRESH = Source(
    TokenRefreshAttempt.started_at,
    TokenRefreshAttempt.workspace_id,
    {
        "provider": TokenRefreshAttempt.provider,
        "workspace_id": TokenRefreshAttempt.workspace_id,
        "outcome": TokenRefreshAttempt.outcome,
    },
)
_POSTS = Source(
    Post.scheduled_at, Post.workspace_id, {"workspace_id": Post.workspace_id, "status": Post.status}
)
_EVENTS = Source(
    EventCount.bucket_start,
    EventCount.scope,
    {"name": EventCount.name, "workspace_id": EventCount.scope},
    text_workspace=True,
    bucket_s=BUCKET_S,
)
_ALERTS = Source(
    Alert.pending_since,
    Alert.workspace_id,
    {"workspace_id": Alert.workspace_id, "severity": Alert.severity, "state": Alert.status},
)


def _share(condition: ColumnElement[bool], of: Column) -> ColumnElement[Any]:
    """The share of rows with ``of`` set that meet ``condition`` (NULL when there are none)."""
    hits = func.sum(case((condition, 1.0), else_=0.0))
    return hits / func.nullif(func.count(of), 0)


_outcome = PublishAttempt.outcome
_finished = func.count(_outcome)
_latency_s = PublishAttempt.latency_ms / 1000.0
_processing_s = seconds_between(PublishAttempt.finished_at, PublishAttempt.started_at)
_delay_s = seconds_between(PublishAttempt.finished_at, Post.scheduled_at)
_wait_s = seconds_between(PublishAttempt.started_at, Post.scheduled_at)


def _with_post(stmt: Select[Any]) -> Select[Any]:
    return stmt.join(Post, Post.id == PublishAttempt.post_id)


def _due(now: datetime) -> ColumnElement[bool]:
    """Due, and of an integration the dispatcher hands posts over for: one waiting for its user,
    paused by a rate limit or mid-refresh holds its posts on purpose (they are no backlog)."""
    return and_(
        or_(
            (Post.status == PostStatus.SCHEDULED) & (Post.scheduled_at <= now),
            (Post.status == PostStatus.RETRYING) & (Post.next_attempt_at <= now),
        ),
        _handed_over(now),
    )


def _handed_over(now: datetime) -> ColumnElement[bool]:
    return Post.integration_id.in_(select(Integration.id).where(handing_over(now)))


FINAL_POST_STATUSES = (PostStatus.PUBLISHED, PostStatus.FAILED, PostStatus.CANCELLED)
# Listed, not NOT IN (finals): an IN list is an index scan on ix_posts_status_scheduled_at.
OPEN_POST_STATUSES = tuple(s for s in PostStatus if s not in FINAL_POST_STATUSES)
# Posts are counted by a column of the (status, …) indexes they are read through, so that a
# count is an index-only scan (a day of finished posts is tens of thousands of entries).
_COUNTED = Post.status


def _merged(*parts: list[Sample]) -> list[Sample]:
    """Series of several gauges added up by their labels."""
    total: dict[frozenset[tuple[str, str]], float] = {}
    for samples in parts:
        for sample in samples:
            key = frozenset(sample.labels.items())
            total[key] = total.get(key, 0.0) + (sample.value or 0.0)
    return [Sample(dict(key), value, 1) for key, value in total.items()]


def _posts(session: Session, q: Query) -> list[Sample]:
    """Open posts counted whole (bounded by the work in flight); finished ones only when
    scheduled inside the window (``ix_posts_status_scheduled_at``)."""
    open_now = gauge(_POSTS, _COUNTED, [Post.status.in_(OPEN_POST_STATUSES)])
    finished = aggregate(
        _POSTS, func.count(_COUNTED), literal(1), where=[Post.status.in_(FINAL_POST_STATUSES)]
    )
    return _merged(open_now(session, q), finished(session, q))


def _backlog(session: Session, q: Query) -> list[Sample]:
    waiting = _due(q.window.end) | (Post.status == PostStatus.QUEUED)
    return gauge(_POSTS, _COUNTED, [waiting])(session, q)


def _due_unqueued(session: Session, q: Query) -> list[Sample]:
    return gauge(_POSTS, _COUNTED, [_due(q.window.end)])(session, q)


def _oldest_due_age(session: Session, q: Query) -> list[Sample]:
    """Through the dispatcher's own indexes: one min() per status that can be due."""
    found = []
    for status, column in (
        (PostStatus.SCHEDULED, Post.scheduled_at),
        (PostStatus.RETRYING, Post.next_attempt_at),
    ):
        stmt = _POSTS.where(select(func.min(column)), q, windowed=False)
        first = session.scalar(
            stmt.where(Post.status == status, column <= q.window.end, _handed_over(q.window.end))
        )
        if first is not None:
            found.append(first)
    age = max(0.0, (q.window.end - min(found)).total_seconds()) if found else 0.0
    return [Sample({}, age, 1)]


def _ages(rows: Iterable[tuple[str, datetime | None]], label: str, q: Query) -> list[Sample]:
    """Per-key ages at the window's end, aggregated to the oldest when not split."""
    wanted = q.filters.get(label)
    ages = {
        key: (q.window.end - at).total_seconds() if at is not None else None
        for key, at in rows
        if wanted is None or key == wanted
    }
    if label in q.group_by:
        return [
            Sample({label: key}, age, 0 if age is None else 1) for key, age in sorted(ages.items())
        ]
    known = [age for age in ages.values() if age is not None]
    return [Sample({}, max(known), len(known)) if known else Sample({}, None, 0)]


def _heartbeat_age(session: Session, q: Query) -> list[Sample]:
    # A queue no worker has consumed yet ages from when beat first expected it.
    consumed = func.coalesce(Heartbeat.received_at, Heartbeat.expected_since)
    rows = session.execute(select(Heartbeat.queue, consumed)).tuples().all()
    return _ages(rows, "queue", q)


def _workers_seen(session: Session, q: Query) -> list[Sample]:
    seen = session.scalar(
        select(func.count(func.distinct(Heartbeat.worker))).where(
            Heartbeat.received_at >= q.window.start, Heartbeat.worker.is_not(None)
        )
    )
    return [Sample({}, float(seen or 0), 1)]


def _job_success_age(session: Session, q: Query) -> list[Sample]:
    rows = session.execute(select(JobRun.job, JobRun.last_succeeded_at)).tuples().all()
    return _ages(rows, "task", q)


def last_audit_verdict(session: Session, at: datetime) -> AuditVerdict | None:
    """The verifier's last recorded result before ``at``: the one source of the audit chain's
    state, read by the "Audit chain broken" rule (``audit.chain_broken``) and ``/metrics``."""
    row = session.execute(
        select(AuditVerification.verified_at, AuditVerification.ok)
        .where(AuditVerification.verified_at <= at)
        .order_by(AuditVerification.verified_at.desc())
        .limit(1)
    ).first()
    return AuditVerdict(row.verified_at, row.ok) if row is not None else None


def _audit_chain_broken(session: Session, q: Query) -> list[Sample]:
    latest = last_audit_verdict(session, q.window.end)
    if latest is None:
        return [Sample({}, None, 0)]
    return [Sample({}, 0.0 if latest.ok else 1.0, 1)]


def _open_alerts(session: Session, q: Query) -> list[Sample]:
    """Open alerts; a workspace's share includes the system-wide ones (they concern it too)."""
    where: list[ColumnElement[bool]] = [Alert.status.in_(OPEN_ALERT_STATUSES)]
    if q.workspace_id is not None:
        where.append((Alert.workspace_id == q.workspace_id) | Alert.workspace_id.is_(None))
        q = dataclasses.replace(q, workspace_id=None)
    return gauge(_ALERTS, Alert.id, where)(session, q)


def _figure(
    name: str,
    description: str,
    unit: str,
    labels: tuple[str, ...],
    compute: Callable[[Session, Query], list[Sample]],
    *,
    per_workspace: bool = True,
    split: tuple[str, ...] | None = None,
    system_rows: bool = False,
) -> Figure:
    shown = labels if split is None else split
    if per_workspace and "workspace_id" not in labels:
        labels = (*labels, "workspace_id")
    return Figure(name, description, unit, labels, per_workspace, compute, shown, system_rows)


_PUB = ("provider", "outcome", "code")
_REF = ("provider", "outcome")
_FIGURES = [
    _figure(
        "publish.attempts",
        "Publish attempts started in the window",
        "attempts",
        _PUB,
        aggregate(_PUBLISH, func.count(), func.count()),
        split=("provider", "outcome"),
    ),
    _figure(
        "publish.failure_rate",
        "Share of finished publish attempts that did not publish",
        "ratio",
        ("provider",),
        aggregate(_PUBLISH, _share(_outcome.notin_(PUBLISH_SUCCESS), _outcome), _finished),
    ),
    _figure(
        "publish.success_rate",
        "Share of finished publish attempts that published",
        "ratio",
        ("provider",),
        aggregate(_PUBLISH, _share(_outcome.in_(PUBLISH_SUCCESS), _outcome), _finished),
    ),
    _figure(
        "publish.retry_rate",
        "Share of finished publish attempts that sent the post round again",
        "ratio",
        ("provider",),
        aggregate(_PUBLISH, _share(_outcome.in_(PUBLISH_RETRY), _outcome), _finished),
    ),
    _figure(
        "publish.latency_avg_s",
        "Average provider latency of publish attempts",
        "seconds",
        ("provider",),
        aggregate(_PUBLISH, func.avg(_latency_s), func.count(PublishAttempt.latency_ms)),
    ),
    _figure(
        "publish.latency_p95_s",
        "95th percentile of provider latency",
        "seconds",
        ("provider",),
        percentile(_PUBLISH, _latency_s, 0.95),
    ),
    _figure(
        "publish.errors",
        "Publish attempts that ended with an error code",
        "attempts",
        ("provider", "code"),
        aggregate(
            _PUBLISH,
            func.count(PublishAttempt.error_code),
            func.count(),
            where=[PublishAttempt.error_code.is_not(None)],
        ),
    ),
    *(
        _figure(
            f"publish.delay_p{int(f * 100)}_s",
            f"{int(f * 100)}th percentile of the delay from scheduled_at to published",
            "seconds",
            ("provider",),
            percentile(
                _PUBLISH, _delay_s, f, join=_with_post, where=[_outcome.in_(PUBLISH_SUCCESS)]
            ),
            split=(),
        )
        for f in (0.5, 0.95, 0.99)
    ),
    _figure(
        "queue.avg_wait_s",
        "Average wait from a post being due to its first attempt starting",
        "seconds",
        ("provider",),
        aggregate(
            _PUBLISH,
            func.avg(_wait_s),
            func.count(),
            where=[PublishAttempt.attempt_number == 1],
            join=_with_post,
        ),
        split=(),
    ),
    _figure(
        "queue.avg_processing_s",
        "Average time from an attempt starting to its outcome",
        "seconds",
        ("provider",),
        aggregate(_PUBLISH, func.avg(_processing_s), func.count(PublishAttempt.finished_at)),
        split=(),
    ),
    _figure(
        "tokens.refresh_attempts",
        "Token refreshes started in the window",
        "refreshes",
        _REF,
        aggregate(_REFRESH, func.count(), func.count()),
    ),
    _figure(
        "tokens.refresh_success_rate",
        "Share of finished token refreshes that refreshed",
        "ratio",
        ("provider",),
        aggregate(
            _REFRESH,
            _share(TokenRefreshAttempt.outcome == REFRESH_SUCCESS, TokenRefreshAttempt.outcome),
            func.count(TokenRefreshAttempt.outcome),
        ),
    ),
    _figure(
        "queue.backlog",
        "Posts due but not queued, plus queued ones (now)",
        "posts",
        (),
        _backlog,
    ),
    _figure("queue.due_unqueued", "Posts due but not yet queued (now)", "posts", (), _due_unqueued),
    _figure(
        "queue.posts",
        "Posts in each status: open ones now, finished ones scheduled in the window",
        "posts",
        ("status",),
        _posts,
    ),
    _figure(
        "queue.oldest_due_age_s",
        "Age of the oldest post that is due and not queued, 0 when none (now)",
        "seconds",
        (),
        _oldest_due_age,
    ),
    _figure(
        "workers.heartbeat_age_s",
        "Age of the last heartbeat consumed on each queue (now)",
        "seconds",
        ("queue",),
        _heartbeat_age,
        per_workspace=False,
    ),
    _figure(
        "workers.seen",
        "Workers that consumed a heartbeat in the window",
        "workers",
        (),
        _workers_seen,
        per_workspace=False,
    ),
    _figure(
        "jobs.last_success_age_s",
        "Time since each periodic job (named by its task) last succeeded (now)",
        "seconds",
        ("task",),
        _job_success_age,
        per_workspace=False,
    ),
    _figure(
        "audit.chain_broken",
        "1 when the audit chain verifier last found a break, 0 when it found none",
        "bool",
        (),
        _audit_chain_broken,
        per_workspace=False,
    ),
    _figure(
        "events.count",
        "Custom event counters (herald.telemetry.counters) summed over the window",
        "events",
        ("name",),
        aggregate(_EVENTS, func.coalesce(func.sum(EventCount.count), 0), literal(1)),
    ),
    _figure(
        "alerts.open",
        "Open alerts by state and severity (now)",
        "alerts",
        ("state", "severity"),
        _open_alerts,
        system_rows=True,
    ),
]
CATALOGUE: dict[str, Figure] = {figure.name: figure for figure in _FIGURES}


def figure(name: str) -> Figure:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise FigureError(f"unknown figure {name!r}") from None


def check_query(fig: Figure, q: Query) -> None:
    """Refuse labels the figure does not have and per-workspace reads of global figures."""
    unknown = (set(q.group_by) | set(q.filters)) - set(fig.labels)
    if unknown:
        raise FigureError(
            f"{fig.name} has no label {', '.join(sorted(unknown))}; "
            f"it has {', '.join(fig.labels) or 'none'}"
        )
    if q.workspace_id is not None and not fig.per_workspace:
        raise FigureError(f"{fig.name} is not computed per workspace")


def compute(
    session: Session,
    name: str,
    window: Window,
    *,
    workspace_id: uuid.UUID | None = None,
    group_by: Sequence[str] = (),
    filters: Mapping[str, str] | None = None,
) -> list[Sample]:
    """The series of figure ``name`` over ``window`` (see the module docstring)."""
    fig = figure(name)
    q = Query(window, workspace_id, tuple(group_by), dict(filters or {}))
    check_query(fig, q)
    return fig.compute(session, q)
