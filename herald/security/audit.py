"""The security audit log: append-only, hash-chained rows.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own canonical JSON,
its ``sequence`` included, so editing, deleting, inserting or reordering any row breaks the
chain at that row; :mod:`herald.security.audit_verify` finds the first break and checks the
chain against the signed checkpoints kept outside the database
(:mod:`herald.security.checkpoints`).

Appends are serialised by one row, ``audit_chain_head``: an append's first statement is an
UPDATE of that row, which takes its row lock on Postgres and the write lock on SQLite, so the
sequence and previous hash it then reads cannot change under it until its transaction ends. Many
writers therefore form one chain (tested with threads on both databases); the cost is one
UPDATE, one INSERT and one more UPDATE.

Personal data (IP, user agent, names a caller passes as ``personal``) is stored in
``audit_personal_data``, outside the hashed content: the row hashes only a salted digest of it,
so :func:`herald.security.audit_admin.erase_subject` can delete it and the chain still verifies.

Fields are encoded against log injection (control characters escaped, lengths capped before
and after escaping) and details pass through the redactor: secrets never enter the audit log.
Writing an event never breaks the operation it records: a failure rolls back only the event's
savepoint, is logged and counted (``audit.write_failed``, read by the "Audit write failures"
rule, and ``herald_audit_write_failures_total``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from herald.models import (
    CHAIN_FORMAT,
    AuditChainHead,
    AuditEvent,
    AuditPersonalData,
    utcnow,
)
from herald.redaction import redact_value
from herald.telemetry import context, counters, metrics

log = structlog.get_logger("herald.audit")

GENESIS = "0" * 64
WRITE_FAILED = "audit.write_failed"  # the counter the "Audit write failures" rule reads


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
    POST_CHANGED = "post.changed"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_SILENCED = "alert.silenced"
    RULE_CHANGED = "alert_rule.changed"
    SENSITIVE_DATA_ACCESS = "sensitive_data.access"
    SUSPICIOUS_ACTIVITY = "security.suspicious"
    AUDIT_PURGE = "audit.purge"
    AUDIT_ERASURE = "audit.erasure"
    KEY_ROTATION = "keys.rotation"


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
    type: str  # "user", "anonymous", "service_role", "system", "cli", "task"
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


SYSTEM = Actor("system")


def clean(value: str | None, limit: int) -> str | None:
    """Escape control and other non-printable characters (CR, LF, NUL, U+2028…: no forged
    lines in any log or terminal built from this), then cap. A huge value is cut before
    escaping too, so the work is bounded whatever arrives."""
    if value is None:
        return None
    value = value[: limit * 2]
    if not value.isprintable():
        value = value.encode("unicode_escape").decode("ascii")
    return value[:limit]


def _clean_json(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return clean(value, 2000)
    if depth > 6:
        return None
    if isinstance(value, dict):
        return {clean(str(k), 100): _clean_json(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_clean_json(v, depth + 1) for v in list(value)[:50]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean(str(value), 2000)


def _json(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def canonical(event: AuditEvent) -> str:
    """The hashed content of a row (format 1 rows keep their original shape)."""
    body: dict[str, Any] = {
        "occurred_at": event.occurred_at.isoformat(),
        "event_type": event.event_type,
        "severity": event.severity,
        "outcome": event.outcome,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "workspace_id": str(event.workspace_id) if event.workspace_id else None,
        "correlation_id": event.correlation_id,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "details": event.details,
        "message": event.message,
    }
    if event.chain_format == 1:
        body |= {"ip": event.ip, "user_agent": event.user_agent}
    else:
        body |= {
            "format": event.chain_format,
            "sequence": event.sequence,
            "action": event.action,
            "personal_digest": event.personal_digest,
        }
    return _json(body)


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(event)).encode()).hexdigest()


def personal_digest(salt: str, data: dict[str, Any]) -> str:
    return hashlib.sha256((salt + "\n" + _json(data)).encode()).hexdigest()


def _personal(actor: Actor, extra: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if actor.ip:
        data["ip"] = clean(actor.ip, 64)
    if actor.user_agent:
        data["user_agent"] = clean(actor.user_agent, 500)
    if extra:
        data |= _clean_json(redact_value(extra))
    return data


def _take_head(session: Session) -> tuple[int, str]:
    """Lock the chain head and return the next sequence and the previous hash."""
    bump = (
        update(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .values(sequence=AuditChainHead.sequence + 1)
        .returning(AuditChainHead.sequence, AuditChainHead.hash)
    )
    row = session.execute(bump).first()
    if row is None:  # a schema made without the migration's seed row
        tail = session.execute(
            select(AuditEvent.sequence, AuditEvent.hash).order_by(AuditEvent.sequence.desc())
        ).first()
        session.execute(
            insert(AuditChainHead).values(
                id=1, sequence=tail[0] if tail else 0, hash=tail[1] if tail else GENESIS
            )
        )
        row = session.execute(bump).one()
    return int(row[0]), str(row[1])


def _append(
    session: Session,
    event_type: str,
    *,
    actor: Actor,
    outcome: str,
    severity: str,
    workspace_id: uuid.UUID | None,
    action: str | None,
    resource_type: str | None,
    resource_id: str | None,
    message: str,
    details: dict[str, Any] | None,
    personal: dict[str, Any] | None,
    subject: str | None,
    occurred_at: datetime | None,
) -> AuditEvent:
    sequence, prev = _take_head(session)
    data = _personal(actor, personal)
    salt = os.urandom(16).hex()
    safe_details = _clean_json(redact_value(details or {}))
    event = AuditEvent(
        sequence=sequence,
        chain_format=CHAIN_FORMAT,
        occurred_at=occurred_at or utcnow(),
        event_type=event_type,
        action=clean(action, 128),
        severity=severity,
        outcome=outcome,
        actor_type=clean(actor.type, 32) or "unknown",
        actor_id=clean(actor.id, 200),
        workspace_id=workspace_id,
        correlation_id=clean(context.correlation_id(), 128),
        resource_type=clean(resource_type, 64),
        resource_id=clean(resource_id, 200),
        details=safe_details if isinstance(safe_details, dict) else {},
        message=clean(redact_value(message), 2000) or "",
        personal_digest=personal_digest(salt, data) if data else None,
        prev_hash=prev,
    )
    event.hash = chain_hash(prev, event)
    session.add(event)
    if data:
        who = subject if subject is not None else actor.id
        session.add(
            AuditPersonalData(sequence=sequence, subject=clean(who, 200), salt=salt, data=data)
        )
    session.flush()
    session.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(hash=event.hash))
    return event


def record(
    session: Session,
    event_type: EventType,
    *,
    actor: Actor = SYSTEM,
    outcome: Outcome = Outcome.SUCCESS,
    severity: Severity = Severity.LOW,
    workspace_id: uuid.UUID | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    message: str = "",
    details: dict[str, Any] | None = None,
    personal: dict[str, Any] | None = None,
    subject: str | None = None,
    occurred_at: datetime | None = None,
) -> AuditEvent | None:
    """Append one event to the chain in the session's transaction (committed with it).

    ``details`` is redacted metadata, hashed with the row; ``personal`` (names, e-mail
    addresses) is personal metadata, kept with the IP and user agent outside the hashed
    content under ``subject`` (default: the actor's id) so it can be erased. Returns ``None``
    when the event could not be written: the failure is logged and counted, the caller's
    transaction goes on.
    """
    try:
        with session.begin_nested():
            event = _append(
                session,
                event_type.value,
                actor=actor,
                outcome=outcome.value,
                severity=severity.value,
                workspace_id=workspace_id,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                message=message,
                details=details,
                personal=personal,
                subject=subject,
                occurred_at=occurred_at,
            )
    except Exception as exc:
        _count_failure(session, event_type, exc)
        return None
    log.info(
        "audit.event",
        sequence=event.sequence,
        event_type=event.event_type,
        outcome=event.outcome,
        severity=event.severity,
        actor_type=event.actor_type,
        resource_type=event.resource_type,
    )
    return event


def _count_failure(session: Session, event_type: EventType, exc: Exception) -> None:
    metrics.audit_write_failures.add(1, {"event_type": event_type.value})
    log.error("audit.write_failed", event_type=event_type.value, error=type(exc).__name__)
    try:
        with session.begin_nested():
            counters.increment(session, WRITE_FAILED)
    except Exception:
        log.error("audit.write_failed_uncounted", event_type=event_type.value)
