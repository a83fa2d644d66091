"""Figures computed in SQL over a time window ``[start, end)``, for one workspace or all.

The monitoring API (``GET /api/postiz/monitoring/metrics``) and health read these. Each
:class:`Figure` is a name from the figure catalogue's vocabulary (``publish.attempts``,
``publish.latency_p95_s``, ``queue.backlog``…), its labels and its value, so the endpoint can
serve the alerting work's catalogue (``herald/telemetry/figures.py``) through the same
:func:`compute_figures` signature once it is merged.

Every windowed query reads only its window through the attempt tables' ``started_at``
indexes (``(workspace_id, started_at)`` when scoped). Percentiles are ``percentile_cont`` on
Postgres and computed from the window's rows on SQLite (the embedded, single-machine case).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from herald.models import Post, PostStatus, PublishAttempt, TokenRefreshAttempt, utcnow
from herald.settings import Settings
from herald.telemetry.state import OPEN_STATUSES, due_posts, post_counts

SUCCESS_OUTCOMES = ("published", "reconciled")
REFRESH_SUCCESS = "refreshed"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float | None  # None: no sample in the window
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishSummary:
    attempts: int
    succeeded: int
    failed: int
    latency_avg_s: float | None
    latency_p95_s: float | None

    @property
    def failure_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.failed / finished if finished else None


def _seconds(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _percentiles(
    session: Session, values: ColumnElement[Any], query: Select[Any], points: Sequence[float]
) -> list[float | None]:
    """The ``points`` percentiles of ``values`` over the rows ``query`` selects."""
    if session.get_bind().dialect.name == "postgresql":
        row = session.execute(
            query.with_only_columns(*(func.percentile_cont(p).within_group(values) for p in points))
        ).one()
        return [float(v) if v is not None else None for v in row]
    ordered = sorted(
        float(v) for v in session.scalars(query.with_only_columns(values)) if v is not None
    )
    if not ordered:
        return [None for _ in points]
    return [_interpolate(ordered, p) for p in points]


def _interpolate(ordered: list[float], point: float) -> float:
    """``percentile_cont`` on a sorted list: linear between the closest ranks."""
    rank = point * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _attempts(start: datetime, end: datetime, workspace_id: uuid.UUID | None) -> Select[Any]:
    query = select(PublishAttempt.id).where(
        PublishAttempt.started_at >= start, PublishAttempt.started_at < end
    )
    if workspace_id is not None:
        query = query.where(PublishAttempt.workspace_id == workspace_id)
    return query


def _failed() -> ColumnElement[bool]:
    return PublishAttempt.outcome.is_not(None) & PublishAttempt.outcome.not_in(SUCCESS_OUTCOMES)


def publish_summary(
    session: Session, *, start: datetime, end: datetime, workspace_id: uuid.UUID | None
) -> PublishSummary:
    """Every provider together: attempts, outcomes and latency in the window."""
    window = _attempts(start, end, workspace_id)
    latency = PublishAttempt.latency_ms / 1000.0
    attempts, succeeded, failed, average = session.execute(
        window.with_only_columns(
            func.count(),
            func.count().filter(PublishAttempt.outcome.in_(SUCCESS_OUTCOMES)),
            func.count().filter(_failed()),
            func.avg(latency),
        )
    ).one()
    (p95,) = _percentiles(session, latency, window.where(latency.is_not(None)), [0.95])
    return PublishSummary(
        attempts, succeeded, failed, float(average) if average is not None else None, p95
    )


def _publish_figures(
    session: Session, start: datetime, end: datetime, workspace_id: uuid.UUID | None
) -> list[Figure]:
    window = _attempts(start, end, workspace_id)
    provider, outcome = PublishAttempt.provider, PublishAttempt.outcome
    figures: list[Figure] = []
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, result, count in session.execute(
        window.with_only_columns(provider, outcome, func.count()).group_by(provider, outcome)
    ).tuples():
        label = result or "in_flight"
        figures.append(Figure("publish.attempts", count, {"provider": name, "outcome": label}))
        if result is not None:
            totals[name][0] += count
            totals[name][1] += count if result not in SUCCESS_OUTCOMES else 0
    for name, (finished, failed) in sorted(totals.items()):
        figures.append(Figure("publish.failure_rate", failed / finished, {"provider": name}))
    latency = PublishAttempt.latency_ms / 1000.0
    for name in sorted(totals):
        timed = window.where(provider == name, latency.is_not(None))
        average = session.scalar(timed.with_only_columns(func.avg(latency)))
        (p95,) = _percentiles(session, latency, timed, [0.95])
        labels = {"provider": name}
        figures.append(Figure("publish.latency_avg_s", _float(average), labels))
        figures.append(Figure("publish.latency_p95_s", p95, labels))
    errors = window.where(PublishAttempt.error_code.is_not(None))
    for name, code, count in session.execute(
        errors.with_only_columns(provider, PublishAttempt.error_code, func.count()).group_by(
            provider, PublishAttempt.error_code
        )
    ).tuples():
        figures.append(Figure("publish.errors", count, {"provider": name, "code": str(code)}))
    return figures


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _token_figures(
    session: Session, start: datetime, end: datetime, workspace_id: uuid.UUID | None
) -> list[Figure]:
    attempt = TokenRefreshAttempt
    query = select(attempt.provider, attempt.outcome, func.count()).where(
        attempt.started_at >= start, attempt.started_at < end
    )
    if workspace_id is not None:
        query = query.where(attempt.workspace_id == workspace_id)
    figures: list[Figure] = []
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for provider, outcome, count in session.execute(
        query.group_by(attempt.provider, attempt.outcome)
    ).tuples():
        labels = {"provider": provider, "outcome": outcome or "in_flight"}
        figures.append(Figure("tokens.refresh_attempts", count, labels))
        if outcome is not None:
            totals[provider][0] += count
            totals[provider][1] += count if outcome == REFRESH_SUCCESS else 0
    for provider, (finished, succeeded) in sorted(totals.items()):
        rate = succeeded / finished
        figures.append(Figure("tokens.refresh_success_rate", rate, {"provider": provider}))
    return figures


def _queue_figures(
    session: Session,
    settings: Settings,
    start: datetime,
    end: datetime,
    workspace_id: uuid.UUID | None,
) -> list[Figure]:
    now = utcnow()
    counts = post_counts(session, settings, now, workspace_id)
    due, _ = due_posts(session, now, workspace_id)
    figures = [Figure(f"queue.{status.value}", counts[status]) for status in OPEN_STATUSES]
    figures.append(Figure("queue.due_unqueued", due))
    figures.append(Figure("queue.backlog", due + counts[PostStatus.QUEUED]))
    window = _attempts(start, end, workspace_id)
    first = window.join(Post, Post.id == PublishAttempt.post_id).where(
        PublishAttempt.attempt_number == 1
    )
    wait = _seconds(session, PublishAttempt.started_at, Post.scheduled_at)
    processing = _seconds(session, PublishAttempt.finished_at, PublishAttempt.started_at)
    figures.append(
        Figure("queue.avg_wait_s", _float(session.scalar(first.with_only_columns(func.avg(wait)))))
    )
    average = session.scalar(
        window.where(PublishAttempt.finished_at.is_not(None)).with_only_columns(
            func.avg(processing)
        )
    )
    figures.append(Figure("queue.avg_processing_s", _float(average)))
    published = window.join(Post, Post.id == PublishAttempt.post_id).where(
        PublishAttempt.outcome.in_(SUCCESS_OUTCOMES), Post.published_at.is_not(None)
    )
    delay = _seconds(session, Post.published_at, Post.scheduled_at)
    points = (0.5, 0.95, 0.99)
    for point, value in zip(points, _percentiles(session, delay, published, points), strict=True):
        figures.append(Figure(f"publish.delay_p{round(point * 100)}_s", value))
    return figures


def compute_figures(
    session: Session,
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
    workspace_id: uuid.UUID | None = None,
) -> list[Figure]:
    """Every figure for the window (queue counts are the current ones)."""
    return [
        *_publish_figures(session, start, end, workspace_id),
        *_token_figures(session, start, end, workspace_id),
        *_queue_figures(session, settings, start, end, workspace_id),
    ]
