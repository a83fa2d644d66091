"""Suspicious activity, found in the recent audit log (``herald.security.detect_suspicious``).

Each pattern below, seen in the last ``HERALD_SUSPICIOUS_WINDOW_S``, becomes one finding
(``security_findings``, unique per pattern, subject and window, so a run that sees the same
burst again adds nothing), one ``security.suspicious`` audit event, and one count of the
``security.suspicious`` counter that the "Suspicious activity" alert rule reads:

- repeated denials (``access.denied``) from one actor or one IP (``HERALD_SUSPICIOUS_DENIALS``);
- any cross-tenant attempt;
- a burst of credential access by one actor (``HERALD_SUSPICIOUS_CREDENTIAL_ACCESS``);
- a burst of OAuth failures from one actor or IP (``HERALD_SUSPICIOUS_OAUTH_FAILURES``);
- service-role use outside tasks (the API: periodic jobs' uses are not audited per tick);
- a token refreshed from two places at once: two successful refreshes of one integration by
  different workers within ``HERALD_SUSPICIOUS_CONCURRENT_REFRESH_S`` (the refresh lease should
  make that impossible; a stolen refresh token makes it likely).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from herald.models import AuditEvent, AuditPersonalData, SecurityFinding, utcnow
from herald.security import audit
from herald.security.audit import Actor, EventType, Severity
from herald.settings import Settings
from herald.telemetry import counters

COUNTER = "security.suspicious"
DETECTOR = Actor("task", "herald.security.detect_suspicious")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    subject: str
    count: int
    severity: Severity
    details: dict[str, Any] = field(default_factory=dict)


def _grouped(
    session: Session, since: datetime, event_type: EventType, threshold: int, by_ip: bool
) -> list[tuple[str, int]]:
    key: Any = (
        AuditPersonalData.data["ip"].as_string()
        if by_ip
        else AuditEvent.actor_type + ":" + func.coalesce(AuditEvent.actor_id, "")
    )
    stmt: Select[Any] = (
        select(key, func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.occurred_at >= since, AuditEvent.event_type == event_type.value)
    )
    if by_ip:
        stmt = stmt.join(AuditPersonalData, AuditPersonalData.sequence == AuditEvent.sequence)
    stmt = stmt.group_by(key).having(func.count() >= threshold)
    return [(str(k), int(n)) for k, n in session.execute(stmt).all() if k]


def _bursts(session: Session, settings: Settings, since: datetime) -> list[Finding]:
    found = []
    rules = [
        ("repeated_denials", EventType.ACCESS_DENIED, settings.suspicious_denials, (False, True)),
        (
            "credential_access_burst",
            EventType.CREDENTIAL_ACCESS,
            settings.suspicious_credential_access,
            (False,),
        ),
        (
            "oauth_failures",
            EventType.OAUTH_FAILED,
            settings.suspicious_oauth_failures,
            (False, True),
        ),
    ]
    for kind, event_type, threshold, groupings in rules:
        for by_ip in groupings:
            for subject, count in _grouped(session, since, event_type, threshold, by_ip):
                who = f"ip:{subject}" if by_ip else subject
                found.append(Finding(kind, who, count, Severity.HIGH))
    return found


def _each(session: Session, since: datetime) -> list[Finding]:
    rows = session.execute(
        select(
            AuditEvent.sequence, AuditEvent.event_type, AuditEvent.actor_type, AuditEvent.actor_id
        )
        .where(
            AuditEvent.occurred_at >= since,
            AuditEvent.event_type.in_(
                [EventType.CROSS_TENANT_ATTEMPT.value, EventType.SERVICE_ROLE_USE.value]
            ),
        )
        .order_by(AuditEvent.sequence)
    ).all()
    found = []
    for sequence, event_type, actor_type, actor_id in rows:
        if event_type == EventType.CROSS_TENANT_ATTEMPT.value:
            found.append(
                Finding(
                    "cross_tenant_attempt",
                    f"row:{sequence}",
                    1,
                    Severity.CRITICAL,
                    {"actor": f"{actor_type}:{actor_id or ''}"},
                )
            )
        elif actor_type == "service_role":  # the API's service role, not a task's scope
            found.append(Finding("service_role_outside_tasks", f"row:{sequence}", 1, Severity.HIGH))
    return found


def _concurrent_refreshes(session: Session, settings: Settings, since: datetime) -> list[Finding]:
    rows = session.execute(
        select(
            AuditEvent.sequence, AuditEvent.resource_id, AuditEvent.occurred_at, AuditEvent.details
        )
        .where(
            AuditEvent.occurred_at >= since,
            AuditEvent.event_type == EventType.TOKEN_REFRESH_OK.value,
        )
        .order_by(AuditEvent.resource_id, AuditEvent.occurred_at)
    ).all()
    close = timedelta(seconds=settings.suspicious_concurrent_refresh_s)
    found = []
    for before, after in pairwise(rows):
        if (
            before.resource_id == after.resource_id
            and after.occurred_at - before.occurred_at <= close
            and before.details.get("refreshed_by") != after.details.get("refreshed_by")
        ):
            found.append(
                Finding(
                    "concurrent_refresh",
                    f"integration:{after.resource_id}:row:{after.sequence}",
                    2,
                    Severity.CRITICAL,
                    {
                        "integration_id": after.resource_id,
                        "rows": [before.sequence, after.sequence],
                    },
                )
            )
    return found


def detect(session: Session, settings: Settings, *, now: datetime | None = None) -> list[Finding]:
    """Record what is new in the window; returns the findings recorded by this run."""
    now = now or utcnow()
    window = settings.suspicious_window_s
    since = now - timedelta(seconds=window)
    bucket = int(now.timestamp() // window)
    candidates = [
        *_bursts(session, settings, since),
        *_each(session, since),
        *_concurrent_refreshes(session, settings, since),
    ]
    recorded = []
    for finding in candidates:
        per_window = not finding.subject.startswith(("row:", "integration:"))
        key = f"{finding.kind}:{finding.subject}" + (f":{bucket}" if per_window else "")
        key = key[:300]
        if session.scalar(select(SecurityFinding.id).where(SecurityFinding.key == key)):
            continue
        session.add(
            SecurityFinding(
                kind=finding.kind, key=key, count=finding.count, details=finding.details
            )
        )
        audit.record(
            session,
            EventType.SUSPICIOUS_ACTIVITY,
            actor=DETECTOR,
            severity=finding.severity,
            action=f"security.{finding.kind}",
            resource_type="finding",
            resource_id=key,
            message=f"suspicious activity: {finding.kind} ({finding.subject}, {finding.count})",
            details={"kind": finding.kind, "count": finding.count, **finding.details},
        )
        counters.increment(session, COUNTER)
        recorded.append(finding)
    session.flush()
    return recorded
