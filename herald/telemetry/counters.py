"""Custom event counters any module may increment; read back as the ``events.count`` figure.

A counter is a name (``alerts.notification_failed``, ``audit.write_failed``…) counted in
one-minute buckets, overall or per workspace. :func:`increment` is one upsert in the caller's
transaction, so the count commits or rolls back with the work it counts.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from herald.models import EventCount, utcnow

BUCKET_S = 60


def bucket_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def increment(
    session: Session,
    name: str,
    by: int = 1,
    *,
    workspace_id: uuid.UUID | None = None,
    at: datetime | None = None,
) -> None:
    """Add ``by`` to counter ``name`` in the bucket of ``at`` (default now)."""
    values = {
        "name": name,
        "scope": str(workspace_id) if workspace_id else "",
        "bucket_start": bucket_of(at or utcnow()),
        "count": by,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(EventCount).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name", "scope", "bucket_start"],
        set_={"count": EventCount.count + stmt.excluded["count"]},
    )
    session.execute(stmt)
