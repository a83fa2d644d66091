"""``herald.security.detect_suspicious``: each pattern becomes one finding, one audit event and
one count, once per window."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from herald.models import AuditEvent, EventCount, SecurityFinding, utcnow
from herald.security.audit import Actor, EventType, Outcome, record
from herald.security.suspicious import COUNTER, detect
from herald.settings import get_settings

SETTINGS = get_settings().model_copy(
    update={
        "suspicious_denials": 3,
        "suspicious_oauth_failures": 2,
        "suspicious_credential_access": 4,
    }
)


def _many(session: Session, event_type: EventType, n: int, actor: Actor) -> None:
    for _ in range(n):
        record(session, event_type, actor=actor, outcome=Outcome.DENIED)


def test_each_pattern_is_found_once(session: Session) -> None:
    _many(session, EventType.ACCESS_DENIED, 3, Actor("user", "eve", ip="203.0.113.66"))
    _many(session, EventType.ACCESS_DENIED, 2, Actor("anonymous", None, ip="198.51.100.1"))
    _many(session, EventType.OAUTH_FAILED, 2, Actor("user", "oscar", ip="192.0.2.50"))
    _many(session, EventType.CREDENTIAL_ACCESS, 4, Actor("user", "carl"))
    record(session, EventType.CROSS_TENANT_ATTEMPT, actor=Actor("user", "eve"))
    record(session, EventType.SERVICE_ROLE_USE, actor=Actor("service_role", None))
    integration = str(uuid.uuid4())
    now = utcnow()
    for n, worker in enumerate(("worker-a:1", "worker-b:2")):
        record(
            session,
            EventType.TOKEN_REFRESH_OK,
            actor=Actor("task", worker),
            resource_type="integration",
            resource_id=integration,
            details={"refreshed_by": worker},
            occurred_at=now + timedelta(seconds=n),
        )

    found = detect(session, SETTINGS)

    subjects = {(f.kind, f.subject) for f in found}
    assert ("repeated_denials", "user:eve") in subjects
    assert ("repeated_denials", "ip:203.0.113.66") in subjects
    assert not any("198.51.100.1" in s for _, s in subjects)  # 2 < 3: below the threshold
    assert ("oauth_failures", "ip:192.0.2.50") in subjects
    assert ("credential_access_burst", "user:carl") in subjects
    kinds = {f.kind for f in found}
    assert {"cross_tenant_attempt", "service_role_outside_tasks", "concurrent_refresh"} <= kinds
    events = session.scalar(
        select(func.count()).where(AuditEvent.event_type == EventType.SUSPICIOUS_ACTIVITY.value)
    )
    assert events == len(found)
    counted = session.scalar(select(func.sum(EventCount.count)).where(EventCount.name == COUNTER))
    assert counted == len(found)
    # The next run sees the same window: nothing new.
    assert detect(session, SETTINGS) == []
    assert session.scalar(select(func.count()).select_from(SecurityFinding)) == len(found)


def test_refreshes_by_one_worker_or_far_apart_are_not_findings(session: Session) -> None:
    integration = str(uuid.uuid4())
    now = utcnow()
    for n, worker in enumerate(("w:1", "w:1", "w:2")):
        record(
            session,
            EventType.TOKEN_REFRESH_OK,
            resource_type="integration",
            resource_id=integration,
            details={"refreshed_by": worker},
            occurred_at=now + timedelta(minutes=n),
        )
    assert detect(session, SETTINGS) == []
