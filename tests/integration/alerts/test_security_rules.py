"""The security default rules fire on what the audit log's writer and the suspicious-activity
detector count."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine

from herald import db
from herald.alerts.defaults import install
from herald.alerts.engine import check_alerts
from herald.models import utcnow
from herald.security import audit, suspicious
from herald.settings import get_settings
from tests.integration.alerts.test_default_rules import firing


def test_suspicious_activity_and_audit_write_failures_fire(alerting: Engine) -> None:
    with db.session_scope() as session:
        install(session)
    assert firing() == {}
    with db.session_scope() as session:
        audit.record(
            session,
            audit.EventType.CROSS_TENANT_ATTEMPT,
            actor=audit.Actor("user", "mallory"),
            outcome=audit.Outcome.DENIED,
        )
        assert suspicious.detect(session, get_settings())
        # A write that fails (the table is gone for this transaction) is counted, not raised.
        session.execute(text("ALTER TABLE audit_events RENAME TO audit_events_gone"))
        assert audit.record(session, audit.EventType.ADMIN_ACTION) is None
        session.execute(text("ALTER TABLE audit_events_gone RENAME TO audit_events"))
    check_alerts(get_settings(), now=utcnow() + timedelta(seconds=1))
    assert {"Suspicious activity", "Audit write failures"} <= set(firing())
