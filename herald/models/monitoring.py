"""What Herald records about itself for monitoring: heartbeat round trips, periodic job runs
and event counters.

``heartbeats`` and ``job_runs`` hold one row per thing watched (a queue, a job), upserted in
place, so reading them is a primary-key lookup however long Herald has run; they carry no
``workspace_id``: they describe the system, not a tenant. ``event_counts`` holds the custom
counters any module increments (:mod:`herald.telemetry.counters`), in one-minute buckets, so a
windowed read touches only its window.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base, RedactedText


class Heartbeat(Base):
    """The last heartbeat consumed from one queue: beat sent it at ``sent_at``, ``worker``
    ran it at ``received_at``. Its age says whether anyone still consumes the queue.

    ``expected_since`` is when a beat first sent heartbeats to the queue: until one is
    consumed (the three round-trip columns empty), the queue's age counts from then."""

    __tablename__ = "heartbeats"

    queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    expected_since: Mapped[datetime | None]

    @property
    def round_trip_s(self) -> float | None:
        """From beat's send to the worker's start (clocks of two hosts: never below zero)."""
        if self.received_at is None or self.sent_at is None:
            return None
        return max(0.0, (self.received_at - self.sent_at).total_seconds())


class JobRun(Base):
    """The last run of one periodic job (named by its task), whatever its outcome, and since
    when it has been expected to run at all (the first start of a beat that schedules it)."""

    __tablename__ = "job_runs"

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    expected_since: Mapped[datetime | None]
    last_started_at: Mapped[datetime | None]
    last_succeeded_at: Mapped[datetime | None]
    last_failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(RedactedText)


class EventCount(Base):
    """How often a named event happened in one minute, overall (scope "") or per workspace."""

    __tablename__ = "event_counts"
    __table_args__ = (
        Index("ix_event_counts_name_bucket", "name", "bucket_start"),
        Index("ix_event_counts_bucket_start", "bucket_start"),
    )

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
