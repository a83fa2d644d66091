"""The monitoring records Herald writes about itself: heartbeat round trips and job runs.

Each is one upsert of one row keyed by what it describes (a queue, a job), so writing costs
the same on the millionth run as on the first, and readers (``/metrics``, health, the alert
rules) do a primary-key lookup. Job runs are written in a transaction of their own: a job whose
own work rolled back still has its failure recorded. A failure to record is logged, never
raised: monitoring must not break the work it watches.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.models import Heartbeat, JobRun, utcnow
from herald.telemetry.logging import redact_text

log = structlog.get_logger("herald.monitoring")

_MAX_ERROR_CHARS = 2000


def _insert(session: Session, model: type[Any]) -> Any:
    """The INSERT of the session's dialect that has ON CONFLICT (Postgres and SQLite alike)."""
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(model)


def _upsert(session: Session, model: type[Any], key: str, values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE the given columns."""
    statement = _insert(session, model).values(**values)
    changed = {name: statement.excluded[name] for name in values if name != key}
    session.execute(statement.on_conflict_do_update(index_elements=[key], set_=changed))


def record_heartbeat(
    session: Session, *, queue: str, sent_at: datetime, received_at: datetime, worker: str
) -> None:
    """The last round trip on ``queue`` (the caller's transaction commits it)."""
    _upsert(
        session,
        Heartbeat,
        "queue",
        {"queue": queue, "sent_at": sent_at, "received_at": received_at, "worker": worker},
    )


def record_job_run(job: str, started_at: datetime, *, error: BaseException | None = None) -> None:
    """One run of a periodic job: its start, and its success or its failure with the error."""
    values: dict[str, Any] = {"job": job, "last_started_at": started_at}
    if error is None:
        values["last_succeeded_at"] = utcnow()
    else:
        values["last_failed_at"] = utcnow()
        message = f"{type(error).__name__}: {error}"
        values["last_error"] = redact_text(message)[:_MAX_ERROR_CHARS]
    try:
        with db.session_scope() as session:
            _upsert(session, JobRun, "job", values)
    except SQLAlchemyError:
        log.exception("job_run.record_failed", job=job)


def record_queues_expected(queues: Iterable[str], at: datetime) -> None:
    """Beat started sending heartbeats to ``queues``: each is expected to be consumed from
    ``at`` on, unless an earlier beat already expected it (the first start is kept, as for
    jobs). A queue no worker has consumed yet then ages from ``at``, and "Queue not consumed"
    can fire for it."""
    _expect(Heartbeat, "queue", queues, at)


def record_jobs_expected(jobs: Iterable[str], at: datetime) -> None:
    """Beat started with ``jobs`` scheduled: each is expected to run from ``at`` on, unless an
    earlier beat already expected it (the first start is kept, so a beat that keeps restarting
    before a job's first run does not hide that the job never ran)."""
    _expect(JobRun, "job", jobs, at)


def _expect(model: type[Heartbeat | JobRun], key: str, names: Iterable[str], at: datetime) -> None:
    """Set ``expected_since`` to ``at`` on each named row, keeping an earlier one."""
    rows = [{key: name, "expected_since": at} for name in sorted(set(names))]
    if not rows:
        return
    try:
        with db.session_scope() as session:
            statement = _insert(session, model).values(rows)
            kept = func.coalesce(model.expected_since, statement.excluded.expected_since)
            session.execute(
                statement.on_conflict_do_update(index_elements=[key], set_={"expected_since": kept})
            )
    except SQLAlchemyError:
        log.exception("monitoring.expected_unrecorded", names=[row[key] for row in rows])
