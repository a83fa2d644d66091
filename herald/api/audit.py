"""``GET /api/postiz/audit``: the security audit log, newest first.

Access is monitoring's (``api/monitoring_access.py``): a workspace's owners and admins see its
rows; the ``service_role`` sees every workspace's (or one with ``?workspace_id=``), and each of
its reads is itself audited. Personal data (IP, user agent) is shown while it is kept; after an
erasure it reads ``null``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from herald import db
from herald.api.errors import COMMON_RESPONSES
from herald.api.monitoring_access import Monitoring
from herald.api.paths import PREFIX
from herald.contracts import Instant
from herald.models import AuditEvent, AuditPersonalData
from herald.security.audit import EventType, Outcome, Severity

router = APIRouter(prefix=PREFIX, tags=["audit"], responses=COMMON_RESPONSES)

MAX_LIMIT = 500


class AuditEventOut(BaseModel):
    sequence: int
    occurred_at: datetime
    event_type: str
    action: str | None
    severity: str
    outcome: str
    actor_type: str
    actor_id: str | None
    workspace_id: uuid.UUID | None
    resource_type: str | None
    resource_id: str | None
    correlation_id: str | None
    message: str
    details: dict[str, Any]
    ip: str | None = Field(description="null once erased (or never known)")
    user_agent: str | None = Field(description="null once erased (or never known)")


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    next_before: int | None = Field(
        description="Pass as ?before= for the next (older) page; null on the last page"
    )


@router.get("/audit")
def list_audit_events(
    caller: Monitoring,
    *,
    event_type: Annotated[list[EventType] | None, Query(description="Any of these")] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    severity: Annotated[Severity | None, Query(description="Exactly this severity")] = None,
    actor_id: Annotated[str | None, Query(max_length=200)] = None,
    resource_type: Annotated[str | None, Query(max_length=64)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[Instant | None, Query(description="Inclusive")] = None,
    until: Annotated[Instant | None, Query(description="Exclusive")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Rows older than this sequence")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> AuditPage:
    """Audit events matching every filter given, newest first."""
    stmt = select(AuditEvent, AuditPersonalData).outerjoin(
        AuditPersonalData, AuditPersonalData.sequence == AuditEvent.sequence
    )
    stmt = caller.scope.filter(stmt, AuditEvent.workspace_id)
    equal: list[tuple[Any, str | None]] = [
        (AuditEvent.outcome, outcome and outcome.value),
        (AuditEvent.severity, severity and severity.value),
        (AuditEvent.actor_id, actor_id),
        (AuditEvent.resource_type, resource_type),
        (AuditEvent.resource_id, resource_id),
    ]
    for column, value in equal:
        if value is not None:
            stmt = stmt.where(column == value)
    if event_type:
        stmt = stmt.where(AuditEvent.event_type.in_([t.value for t in event_type]))
    if since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    if before is not None:
        stmt = stmt.where(AuditEvent.sequence < before)
    stmt = stmt.order_by(AuditEvent.sequence.desc()).limit(limit + 1)
    with db.session_scope() as session:
        db.service_scope(session, "api.audit")
        rows = session.execute(stmt).tuples().all()
    events = [_out(event, personal) for event, personal in rows[:limit]]
    return AuditPage(events=events, next_before=events[-1].sequence if len(rows) > limit else None)


def _out(event: AuditEvent, personal: AuditPersonalData | None) -> AuditEventOut:
    data = personal.data if personal is not None else {}
    return AuditEventOut(
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        event_type=event.event_type,
        action=event.action,
        severity=event.severity,
        outcome=event.outcome,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        workspace_id=event.workspace_id,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        correlation_id=event.correlation_id,
        message=event.message,
        details=event.details,
        ip=data.get("ip", event.ip),
        user_agent=data.get("user_agent", event.user_agent),
    )
