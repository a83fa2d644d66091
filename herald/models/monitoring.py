"""Records that monitoring reads: worker heartbeats, periodic job runs and event counters.

``heartbeats`` and ``job_runs`` are written by the metrics side (the heartbeat task and the
task base); alert rules and health only read them. ``event_counts`` holds the custom counters
any module increments (:mod:`herald.telemetry.counters`), in one-minute buckets so that a
windowed read touches only its window.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base


class Heartbeat(Base):
    """The last heartbeat round trip consumed on one queue (one row per queue, upserted)."""

    __tablename__ = "heartbeats"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    sent_at: Mapped[datetime]
    received_at: Mapped[datetime]
    worker: Mapped[str | None] = mapped_column(String(200))


class JobRun(Base):
    """The last runs of one periodic job (one row per job name)."""

    __tablename__ = "job_runs"

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_started_at: Mapped[datetime | None]
    last_succeeded_at: Mapped[datetime | None]
    last_failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


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
