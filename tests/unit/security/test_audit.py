from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from herald.models import AuditEvent
from herald.security.audit import Actor, EventType, Outcome, Severity, record, verify_chain


def _three(session: Session) -> list[AuditEvent]:
    actor = Actor("user", "user-1", ip="203.0.113.9", user_agent="pytest")
    return [
        record(session, EventType.OAUTH_INITIATED, actor=actor, workspace_id=uuid.uuid4()),
        record(
            session,
            EventType.CROSS_TENANT_ATTEMPT,
            actor=actor,
            outcome=Outcome.DENIED,
            severity=Severity.HIGH,
            resource_type="post",
            resource_id="p-1",
        ),
        record(session, EventType.TOKEN_REFRESH_OK, details={"refresh_token": "rt-secret"}),
    ]


def test_an_untouched_chain_verifies(session: Session) -> None:
    events = _three(session)
    assert events[1].prev_hash == events[0].hash
    report = verify_chain(session)
    assert report.ok
    assert report.checked == 3


def test_secrets_never_enter_the_audit_log(session: Session) -> None:
    events = _three(session)
    assert events[2].details == {"refresh_token": "[REDACTED]"}


def test_control_characters_cannot_forge_lines(session: Session) -> None:
    event = record(
        session, EventType.ACCESS_DENIED, actor=Actor("user", "evil\nlevel=critical fake=1")
    )
    assert "\n" not in (event.actor_id or "")


def test_an_edited_row_is_found(session: Session) -> None:
    events = _three(session)
    session.execute(
        text("UPDATE audit_events SET outcome = 'success' WHERE id = :id"), {"id": events[1].id}
    )
    session.expire_all()
    report = verify_chain(session)
    assert report.first_break == events[1].id
    assert "does not match" in (report.reason or "")


def test_a_deleted_row_is_found(session: Session) -> None:
    events = _three(session)
    session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": events[1].id})
    session.expire_all()
    report = verify_chain(session)
    assert report.first_break == events[2].id
    assert "link" in (report.reason or "")


def test_reordered_rows_are_found(session: Session) -> None:
    events = _three(session)
    a, b = events[0], events[1]
    session.execute(text("UPDATE audit_events SET id = -1 WHERE id = :id"), {"id": a.id})
    session.execute(text("UPDATE audit_events SET id = :a WHERE id = :b"), {"a": a.id, "b": b.id})
    session.execute(text("UPDATE audit_events SET id = :b WHERE id = -1"), {"b": b.id})
    session.expire_all()
    assert not verify_chain(session).ok
    assert session.scalar(select(AuditEvent.id).order_by(AuditEvent.id).limit(1)) == a.id
