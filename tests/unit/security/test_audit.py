from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from herald.models import AuditEvent, AuditPersonalData, EventCount
from herald.security.audit import (
    WRITE_FAILED,
    Actor,
    EventType,
    Outcome,
    Severity,
    personal_digest,
    record,
)
from herald.security.audit_verify import verify_chain


def _three(session: Session) -> list[AuditEvent]:
    actor = Actor("user", "user-1", ip="203.0.113.9", user_agent="pytest")
    events = [
        record(session, EventType.OAUTH_INITIATED, actor=actor, workspace_id=uuid.uuid4()),
        record(
            session,
            EventType.CROSS_TENANT_ATTEMPT,
            actor=actor,
            outcome=Outcome.DENIED,
            severity=Severity.HIGH,
            action="post.read",
            resource_type="post",
            resource_id="p-1",
        ),
        record(session, EventType.TOKEN_REFRESH_OK, details={"refresh_token": "rt-secret"}),
    ]
    assert all(event is not None for event in events)
    return [event for event in events if event is not None]


def test_an_untouched_chain_verifies_with_gap_free_sequences(session: Session) -> None:
    events = _three(session)
    assert events[1].prev_hash == events[0].hash
    assert [e.sequence for e in events] == [events[0].sequence + n for n in range(3)]
    report = verify_chain(session)
    assert report.ok, report.reason
    assert report.checked >= 3


def test_rows_carry_every_field_the_issue_lists(session: Session) -> None:
    event = _three(session)[1]
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.utcoffset().seconds == 0
    assert (event.actor_type, event.actor_id, event.action) == ("user", "user-1", "post.read")
    assert (event.outcome, event.severity, event.resource_id) == ("denied", "high", "p-1")
    personal = session.get(AuditPersonalData, event.sequence)
    assert personal is not None
    assert personal.data == {"ip": "203.0.113.9", "user_agent": "pytest"}
    assert personal.subject == "user-1"
    assert event.personal_digest == personal_digest(personal.salt, personal.data)
    assert event.ip is None
    assert event.user_agent is None


def test_secrets_never_enter_the_audit_log(session: Session) -> None:
    events = _three(session)
    assert events[2].details == {"refresh_token": "[REDACTED]"}


def test_control_characters_cannot_forge_lines(session: Session) -> None:
    event = record(
        session,
        EventType.ACCESS_DENIED,
        actor=Actor("user", "evil\nlevel=critical fake=1", user_agent="ua\r\nX-Forged: 1"),
        message="line one\rline two\x1b[31m",
        details={"path": "/a\nb", "nested": ["\u2028", "ok"]},
    )
    assert event is not None
    stored = [event.actor_id, event.message, event.details["path"], *event.details["nested"]]
    personal = session.get(AuditPersonalData, event.sequence)
    assert personal is not None
    stored.append(personal.data["user_agent"])
    for value in stored:
        assert value is not None
        assert not any(ch in value for ch in "\r\n\x1b\u2028"), value
    assert event.actor_id == "evil\\nlevel=critical fake=1"


def test_huge_binary_user_agents_and_sql_looking_strings_are_stored_bounded(
    session: Session,
) -> None:
    binary = "".join(chr(n) for n in range(256)) * 4000  # ~1 MB of every byte value
    sql = "x'); DROP TABLE audit_events; --"
    event = record(
        session,
        EventType.ACCESS_DENIED,
        actor=Actor("anonymous", sql, ip="\x00" * 500, user_agent=binary),
        message=sql,
    )
    assert event is not None
    assert event.actor_id == sql
    assert event.message == sql
    personal = session.get(AuditPersonalData, event.sequence)
    assert personal is not None
    assert len(personal.data["user_agent"]) <= 500
    assert len(personal.data["ip"]) <= 64
    assert verify_chain(session).ok


def test_a_failed_write_never_breaks_the_operation_and_is_counted(
    superuser_db_session: Session,
) -> None:
    session = superuser_db_session  # renaming the table takes its owner
    before = _failures(session)
    session.execute(text("ALTER TABLE audit_events RENAME TO audit_events_gone"))
    assert record(session, EventType.ADMIN_ACTION, message="lost") is None
    session.execute(text("SELECT 1"))  # the caller's transaction is still usable
    assert _failures(session) == before + 1
    session.execute(text("ALTER TABLE audit_events_gone RENAME TO audit_events"))


def _failures(session: Session) -> int:
    counts = session.scalars(select(EventCount.count).where(EventCount.name == WRITE_FAILED))
    return sum(counts)


def test_the_database_refuses_update_delete_and_truncate(superuser_db_session: Session) -> None:
    session = superuser_db_session  # even the owner (and RLS aside) is refused by the trigger
    event = _three(session)[0]
    for statement in (
        f"UPDATE audit_events SET message = 'x' WHERE id = {event.id}",
        f"DELETE FROM audit_events WHERE id = {event.id}",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text(statement))
