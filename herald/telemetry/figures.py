"""The catalogue of figures computed in SQL: what alert rules, health and the monitoring API read.

A figure is a named measurement over a window ``[start, end)``, for every workspace or one,
split into series by the labels it offers (``provider``, ``queue``, ``job``…) or aggregated
over them. Each series carries its value and ``count``, the number of observations behind the
value (an alert rule's "minimum samples"). Windowed figures read only their window through the
``(started_at)``, ``(provider, started_at)`` and ``(workspace_id, started_at)`` indexes of the
attempt tables; instant figures (queue backlog, heartbeats, job runs, the audit verifier's
last result) read the current state of small or indexed sets at ``end``.

Percentiles use ``percentile_cont`` on Postgres; SQLite (embedded) has none, so there the
window's values are read and interpolated the same way in Python.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, QueryableAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from herald.models import (
    Alert,
    AuditVerification,
    EventCount,
    Heartbeat,
    JobRun,
    Post,
    PostStatus,
    PublishAttempt,
    TokenRefreshAttempt,
)
from herald.models.alert import OPEN_ALERT_STATUSES

# Outcomes of a publish attempt that put the post on the network.
PUBLISH_SUCCESS = ("published", "reconciled")
# Outcomes that send the post round again (the attempt failed, the post is not lost).
PUBLISH_RETRY = ("transient", "rate_limited", "auth_expired", "ambiguous_retry")
REFRESH_SUCCESS = "refreshed"


Column = ColumnElement[Any] | QueryableAttribute[Any]


class FigureError(ValueError):
    """A figure was asked for in a way it cannot answer (unknown name, label, window)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise FigureError("window bounds must be timezone-aware")
        if self.start >= self.end:
            raise FigureError("a window must start before it ends")

    @classmethod
    def last(cls, seconds: float, end: datetime) -> Window:
        return cls(end - timedelta(seconds=seconds), end)


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a figure: its labels, its value (None without data) and its count."""

    labels: Mapping[str, str]
    value: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Query:
    window: Window
    workspace_id: uuid.UUID | None = None
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    description: str
    unit: str
    labels: tuple[str, ...]  # what series may be split or filtered by
    per_workspace: bool  # whether it can be computed for one workspace
    compute: Callable[[Session, Query], list[Sample]]


# -- SQL helpers -----------------------------------------------------------------------------------


class seconds_between(FunctionElement[float]):  # noqa: N801 - reads as a SQL function
    """``later - earlier`` in seconds, on Postgres and SQLite."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "postgresql")
def _seconds_pg(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as Postgres' ``percentile_cont``."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _workspace_value(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FigureError(f"workspace_id filter {value!r} is not a UUID") from None


@dataclass(frozen=True, slots=True)
class _Source:
    """A table read through its time column, and the columns its labels come from."""

    time: InstrumentedAttribute[datetime]
    workspace: InstrumentedAttribute[Any]
    dims: Mapping[str, Column]
    text_workspace: bool = False  # workspace ids kept as text (the counters' scope)

    def _workspace(self, value: uuid.UUID | str) -> Any:
        if self.text_workspace:
            return str(value)
        return value if isinstance(value, uuid.UUID) else _workspace_value(value)

    def where(self, stmt: Select[Any], q: Query, *, windowed: bool = True) -> Select[Any]:
        if windowed:
            stmt = stmt.where(self.time >= q.window.start, self.time < q.window.end)
        if q.workspace_id is not None:
            stmt = stmt.where(self.workspace == self._workspace(q.workspace_id))
        for name, wanted in q.filters.items():
            value = self._workspace(wanted) if name == "workspace_id" else wanted
            stmt = stmt.where(self.dims[name] == value)
        return stmt

    def groups(self, q: Query) -> list[ColumnElement[Any]]:
        return [self.dims[name].label(f"g_{name}") for name in q.group_by]


def _samples(rows: Iterable[Any], q: Query) -> list[Sample]:
    out = []
    for row in rows:
        *keys, value, count = row
        out.append(
            Sample(
                labels={name: _label(key) for name, key in zip(q.group_by, keys, strict=True)},
                value=None if value is None or not count else float(value),
                count=int(count or 0),
            )
        )
    return out


def _aggregate(
    source: _Source,
    value: ColumnElement[Any],
    count: ColumnElement[Any],
    *,
    where: Sequence[ColumnElement[bool]] = (),
    windowed: bool = True,
    join: Callable[[Select[Any]], Select[Any]] = lambda stmt: stmt,
) -> Callable[[Session, Query], list[Sample]]:
    def compute(session: Session, q: Query) -> list[Sample]:
        groups = source.groups(q)
        stmt = source.where(join(select(*groups, value, count)), q, windowed=windowed)
        stmt = stmt.where(*where)
        if groups:
            stmt = stmt.group_by(*groups)
        samples = _samples(session.execute(stmt).all(), q)
        if not groups and not samples:
            samples = [Sample({}, None, 0)]
        return samples

    return compute


def _gauge(
    source: _Source, counted: Column, where: Sequence[ColumnElement[bool]]
) -> Callable[[Session, Query], list[Sample]]:
    """A count of rows as they are now: always known, so one sample per series."""
    return _aggregate(source, func.count(counted), literal(1), where=where, windowed=False)


def _percentile(
    source: _Source,
    expr: ColumnElement[Any],
    fraction: float,
    *,
    join: Callable[[Select[Any]], Select[Any]] = lambda stmt: stmt,
    where: Sequence[ColumnElement[bool]] = (),
) -> Callable[[Session, Query], list[Sample]]:
    def compute(session: Session, q: Query) -> list[Sample]:
        groups = source.groups(q)
        if session.get_bind().dialect.name == "postgresql":
            value = func.percentile_cont(fraction).within_group(expr)
            stmt = source.where(join(select(*groups, value, func.count(expr))), q).where(*where)
            if groups:
                stmt = stmt.group_by(*groups)
            samples = _samples(session.execute(stmt).all(), q)
        else:
            stmt = source.where(join(select(*groups, expr)), q).where(*where, expr.is_not(None))
            series: dict[tuple[Any, ...], list[float]] = {}
            for *keys, observed in session.execute(stmt).all():
                series.setdefault(tuple(keys), []).append(float(observed))
            samples = _samples(
                ((*k, percentile_cont(v, fraction), len(v)) for k, v in series.items()), q
            )
        return samples or ([Sample({}, None, 0)] if not groups else [])

    return compute


# -- sources ---------------------------------------------------------------------------------------

_PUBLISH = _Source(
    PublishAttempt.started_at,
    PublishAttempt.workspace_id,
    {
        "provider": PublishAttempt.provider,
        "workspace_id": PublishAttempt.workspace_id,
        "outcome": PublishAttempt.outcome,
        "code": PublishAttempt.error_code,
    },
)
_REFRESH = _Source(
    TokenRefreshAttempt.started_at,
    TokenRefreshAttempt.workspace_id,
    {
        "provider": TokenRefreshAttempt.provider,
        "workspace_id": TokenRefreshAttempt.workspace_id,
        "outcome": TokenRefreshAttempt.outcome,
    },
)
_POSTS = _Source(
    Post.scheduled_at, Post.workspace_id, {"workspace_id": Post.workspace_id, "status": Post.status}
)
_EVENTS = _Source(
    EventCount.bucket_start,
    EventCount.scope,
    {"name": EventCount.name, "workspace_id": EventCount.scope},
    text_workspace=True,
)
_ALERTS = _Source(
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
    return or_(
        (Post.status == PostStatus.SCHEDULED) & (Post.scheduled_at <= now),
        (Post.status == PostStatus.RETRYING) & (Post.next_attempt_at <= now),
    )


OPEN_POST_STATUSES = (
    PostStatus.SCHEDULED,
    PostStatus.QUEUED,
    PostStatus.PUBLISHING,
    PostStatus.RETRYING,
    PostStatus.NEEDS_REVIEW,
)


def _backlog(session: Session, q: Query) -> list[Sample]:
    waiting = _due(q.window.end) | (Post.status == PostStatus.QUEUED)
    return _gauge(_POSTS, Post.id, [waiting])(session, q)


def _due_unqueued(session: Session, q: Query) -> list[Sample]:
    return _gauge(_POSTS, Post.id, [_due(q.window.end)])(session, q)


def _oldest_due_age(session: Session, q: Query) -> list[Sample]:
    oldest = session.scalar(
        _POSTS.where(select(func.min(Post.scheduled_at)), q, windowed=False).where(
            Post.status == PostStatus.SCHEDULED, Post.scheduled_at <= q.window.end
        )
    )
    age = (q.window.end - oldest).total_seconds() if oldest else 0.0
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
    rows = session.execute(select(Heartbeat.queue, Heartbeat.received_at)).tuples().all()
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
    return _ages(rows, "job", q)


def _audit_chain_broken(session: Session, q: Query) -> list[Sample]:
    latest = session.scalars(
        select(AuditVerification)
        .where(AuditVerification.verified_at < q.window.end)
        .order_by(AuditVerification.verified_at.desc())
        .limit(1)
    ).first()
    if latest is None:
        return [Sample({}, None, 0)]
    return [Sample({}, 0.0 if latest.ok else 1.0, 1)]


def _figure(
    name: str,
    description: str,
    unit: str,
    labels: tuple[str, ...],
    compute: Callable[[Session, Query], list[Sample]],
    *,
    per_workspace: bool = True,
) -> Figure:
    if per_workspace and "workspace_id" not in labels:
        labels = (*labels, "workspace_id")
    return Figure(name, description, unit, labels, per_workspace, compute)


_PUB = ("provider", "outcome", "code")
_REF = ("provider", "outcome")
_FIGURES = [
    _figure(
        "publish.attempts",
        "Publish attempts started in the window",
        "attempts",
        _PUB,
        _aggregate(_PUBLISH, func.count(), func.count()),
    ),
    _figure(
        "publish.failure_rate",
        "Share of finished publish attempts that did not publish",
        "ratio",
        ("provider",),
        _aggregate(_PUBLISH, _share(_outcome.notin_(PUBLISH_SUCCESS), _outcome), _finished),
    ),
    _figure(
        "publish.success_rate",
        "Share of finished publish attempts that published",
        "ratio",
        ("provider",),
        _aggregate(_PUBLISH, _share(_outcome.in_(PUBLISH_SUCCESS), _outcome), _finished),
    ),
    _figure(
        "publish.retry_rate",
        "Share of finished publish attempts that sent the post round again",
        "ratio",
        ("provider",),
        _aggregate(_PUBLISH, _share(_outcome.in_(PUBLISH_RETRY), _outcome), _finished),
    ),
    _figure(
        "publish.latency_avg_s",
        "Average provider latency of publish attempts",
        "seconds",
        ("provider",),
        _aggregate(_PUBLISH, func.avg(_latency_s), func.count(PublishAttempt.latency_ms)),
    ),
    _figure(
        "publish.latency_p95_s",
        "95th percentile of provider latency",
        "seconds",
        ("provider",),
        _percentile(_PUBLISH, _latency_s, 0.95),
    ),
    _figure(
        "publish.errors",
        "Publish attempts that ended with an error code",
        "attempts",
        ("provider", "code"),
        _aggregate(
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
            _percentile(
                _PUBLISH, _delay_s, f, join=_with_post, where=[_outcome.in_(PUBLISH_SUCCESS)]
            ),
        )
        for f in (0.5, 0.95, 0.99)
    ),
    _figure(
        "queue.avg_wait_s",
        "Average wait from a post being due to its first attempt starting",
        "seconds",
        ("provider",),
        _aggregate(
            _PUBLISH,
            func.avg(_wait_s),
            func.count(),
            where=[PublishAttempt.attempt_number == 1],
            join=_with_post,
        ),
    ),
    _figure(
        "queue.avg_processing_s",
        "Average time from an attempt starting to its outcome",
        "seconds",
        ("provider",),
        _aggregate(_PUBLISH, func.avg(_processing_s), func.count(PublishAttempt.finished_at)),
    ),
    _figure(
        "tokens.refresh_attempts",
        "Token refreshes started in the window",
        "refreshes",
        _REF,
        _aggregate(_REFRESH, func.count(), func.count()),
    ),
    _figure(
        "tokens.refresh_success_rate",
        "Share of finished token refreshes that refreshed",
        "ratio",
        ("provider",),
        _aggregate(
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
        "Posts in each open status (now)",
        "posts",
        ("status",),
        _gauge(_POSTS, Post.id, [Post.status.in_(OPEN_POST_STATUSES)]),
    ),
    _figure(
        "queue.oldest_due_age_s",
        "Age of the oldest post that is due and not queued (now)",
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
        "Time since each periodic job last succeeded (now)",
        "seconds",
        ("job",),
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
        _aggregate(_EVENTS, func.coalesce(func.sum(EventCount.count), 0), literal(1)),
    ),
    _figure(
        "alerts.open",
        "Open alerts by state and severity (now)",
        "alerts",
        ("state", "severity"),
        _gauge(_ALERTS, Alert.id, [Alert.status.in_(OPEN_ALERT_STATUSES)]),
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
