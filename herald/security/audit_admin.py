"""The only ways to cut or change the audit log: a purge at a checkpoint, an erasure of a
subject's personal data. Both are audited themselves.

On Postgres a trigger refuses UPDATE, DELETE and TRUNCATE on ``audit_events`` (migration
0013). :func:`append_only_lifted` switches it off inside one transaction — ``ALTER TABLE`` is
transactional and needs the table's owner, so the runtime role cannot, and no other session
ever sees the table unguarded (the ALTER holds an exclusive lock until commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Result, delete, func, select, text
from sqlalchemy.orm import Session

from herald.models import AuditEvent, AuditPersonalData
from herald.security import audit, checkpoints
from herald.security.audit import Actor, EventType, Severity
from herald.security.audit_verify import PURGE, verify_chain
from herald.settings import Settings

_TRIGGERS = ("audit_events_append_only", "audit_events_no_truncate")


class PurgeRefused(Exception):
    """The purge would leave a chain that cannot be verified; nothing was deleted."""


@contextmanager
def append_only_lifted(session: Session) -> Iterator[None]:
    """Let this transaction change ``audit_events`` (Postgres: as the table's owner)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        for trigger in _TRIGGERS:
            session.execute(text(f"ALTER TABLE audit_events DISABLE TRIGGER {trigger}"))
    yield
    if postgres:
        for trigger in _TRIGGERS:
            session.execute(text(f"ALTER TABLE audit_events ENABLE TRIGGER {trigger}"))


def _count(result: Result[Any]) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class Purge:
    cut: int  # the last sequence removed (0: nothing to remove)
    deleted: int
    checkpoint: str | None


def purge(session: Session, settings: Settings, before: datetime, actor: Actor) -> Purge:
    """Remove the rows up to the last one that occurred before ``before``, after signing a
    checkpoint at the cut, so the rest still verifies; then audit the purge."""
    cut = session.scalar(
        select(func.max(AuditEvent.sequence)).where(AuditEvent.occurred_at < before)
    )
    if not cut:
        return Purge(0, 0, None)
    report = verify_chain(session, settings)
    if not report.ok:
        raise PurgeRefused(f"the chain is broken at row {report.first_break}: {report.reason}")
    if not settings.audit_checkpoint_dir or not settings.audit_signing_key:
        raise PurgeRefused(
            "a purge needs HERALD_AUDIT_CHECKPOINT_DIR and HERALD_AUDIT_SIGNING_KEY: the "
            "checkpoint at the cut is what keeps the rest verifiable"
        )
    cut_hash = session.scalar(select(AuditEvent.hash).where(AuditEvent.sequence == cut))
    assert cut_hash is not None
    checkpoint = checkpoints.write(session, settings, reason=PURGE, at_sequence=(cut, cut_hash))
    session.execute(delete(AuditPersonalData).where(AuditPersonalData.sequence <= cut))
    with append_only_lifted(session):
        deleted = _count(session.execute(delete(AuditEvent).where(AuditEvent.sequence <= cut)))
    audit.record(
        session,
        EventType.AUDIT_PURGE,
        actor=actor,
        severity=Severity.HIGH,
        action="audit.purge",
        message=f"audit rows 1-{cut} purged",
        details={"cut": cut, "deleted": deleted, "before": before.isoformat()},
    )
    return Purge(cut, deleted, checkpoint.name)


def erase_subject(session: Session, subject: str, actor: Actor) -> int:
    """Delete every piece of personal data (IP, user agent, names) kept for ``subject``; the
    chain hashes only salted digests of it, so it still verifies. Returns the rows erased."""
    erased = _count(
        session.execute(
            delete(AuditPersonalData).where(AuditPersonalData.subject == audit.clean(subject, 200))
        )
    )
    audit.record(
        session,
        EventType.AUDIT_ERASURE,
        actor=actor,
        severity=Severity.MEDIUM,
        action="audit.erase",
        resource_type="subject",
        resource_id=subject,
        message="personal data erased from the audit log",
        details={"erased": erased},
    )
    return erased
