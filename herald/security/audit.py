"""The security audit log: append-only, hash-chained rows.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own canonical JSON,
so editing, deleting or reordering any row breaks every hash after it; :func:`verify_chain`
finds the first break. Writers are serialised (a transaction-scoped advisory lock on
Postgres; SQLite serialises writers itself) so the chain never forks.

Fields are encoded against log injection (control characters escaped, lengths capped) and
details pass through the log redactor: secrets never enter the audit log.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from herald.models import AuditEvent, AuditVerification, utcnow
from herald.telemetry import context
from herald.telemetry.logging import redact_value

log = structlog.get_logger("herald.audit")

GENESIS = "0" * 64
_LOCK_KEY = 0x48455241  # "HERA": one advisory lock for the chain's tail


class EventType(enum.StrEnum):
    OAUTH_INITIATED = "oauth.initiated"
    OAUTH_COMPLETED = "oauth.completed"
    OAUTH_FAILED = "oauth.failed"
    CREDENTIAL_ACCESS = "credential.access"
    CREDENTIAL_UPDATE = "credential.update"
    CREDENTIAL_DELETE = "credential.delete"
    TOKEN_REFRESH_OK = "token.refresh.ok"  # noqa: S105 - an event name
    TOKEN_REFRESH_FAILED = "token.refresh.failed"  # noqa: S105
    ACCESS_DENIED = "access.denied"
    CROSS_TENANT_ATTEMPT = "access.cross_tenant"
    SERVICE_ROLE_USE = "service_role.use"
    ADMIN_ACTION = "admin.action"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    SENSITIVE_DATA_ACCESS = "sensitive_data.access"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Actor:
    type: str  # "user", "service_role", "system", "cron"
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


SYSTEM = Actor("system")


def _clean(value: str | None, limit: int) -> str | None:
    """Escape control characters (no forged lines in any log built from this) and cap."""
    if value is None:
        return None
    escaped = value.encode("unicode_escape").decode("ascii") if not value.isprintable() else value
    return escaped[:limit]


def _canonical(event: AuditEvent) -> str:
    body = {
        "occurred_at": event.occurred_at.isoformat(),
        "event_type": event.event_type,
        "severity": event.severity,
        "outcome": event.outcome,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "workspace_id": str(event.workspace_id) if event.workspace_id else None,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "correlation_id": event.correlation_id,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "details": event.details,
        "message": event.message,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + "\n" + _canonical(event)).encode()).hexdigest()


def record(
    session: Session,
    event_type: EventType,
    *,
    actor: Actor = SYSTEM,
    outcome: Outcome = Outcome.SUCCESS,
    severity: Severity = Severity.LOW,
    workspace_id: uuid.UUID | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    message: str = "",
    details: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain in the session's transaction (committed with it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    safe_details = redact_value(details or {})
    event = AuditEvent(
        occurred_at=occurred_at or utcnow(),
        event_type=event_type.value,
        severity=severity.value,
        outcome=outcome.value,
        actor_type=actor.type,
        actor_id=_clean(actor.id, 200),
        workspace_id=workspace_id,
        ip=_clean(actor.ip, 64),
        user_agent=_clean(actor.user_agent, 500),
        correlation_id=context.correlation_id(),
        resource_type=_clean(resource_type, 64),
        resource_id=_clean(resource_id, 200),
        details=safe_details if isinstance(safe_details, dict) else {},
        message=_clean(message, 2000) or "",
        prev_hash=prev or GENESIS,
    )
    event.hash = chain_hash(event.prev_hash, event)
    session.add(event)
    session.flush()
    log.info(
        "audit.event",
        event_type=event.event_type,
        outcome=event.outcome,
        severity=event.severity,
        actor_type=event.actor_type,
        resource_type=event.resource_type,
    )
    return event


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    first_break: int | None  # id of the first row whose link or hash is wrong
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify_chain(session: Session, *, batch: int = 1000) -> ChainReport:
    """Walk the chain in id order and recompute every link."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            return ChainReport(checked, None, None)
        for event in rows:
            if event.prev_hash != prev:
                return ChainReport(checked, event.id, "link to the previous row is broken")
            if chain_hash(prev, event) != event.hash:
                return ChainReport(checked, event.id, "row content does not match its hash")
            prev = event.hash
            checked += 1
            last_id = event.id


def verify_and_record(session: Session) -> ChainReport:
    """Verify the chain and record the result for monitoring (the latest row is what the
    "Audit chain broken" rule and ``herald_audit_chain_ok`` read)."""
    report = verify_chain(session)
    session.add(
        AuditVerification(
            ok=report.ok,
            checked=report.checked,
            first_break=report.first_break,
            reason=report.reason,
        )
    )
    session.flush()
    if not report.ok:
        log.error("audit.chain_broken", first_break=report.first_break, reason=report.reason)
    return report
