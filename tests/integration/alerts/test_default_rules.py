"""The default rules: installed by the migration exactly as herald/alerts/defaults.py says,
quiet on a healthy system, and each firing on the situation it is for."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.alerts.defaults import DEFAULT_RULES, install
from herald.alerts.engine import check_alerts
from herald.alerts.rules import RuleSpec
from herald.beat_schedule import beat_schedule
from herald.celery_app import QUEUES
from herald.migrations import runner
from herald.models import (
    Alert,
    AlertRule,
    AlertStatus,
    AuditEvent,
    Heartbeat,
    JobRun,
    Post,
    PostStatus,
    TokenRefreshAttempt,
    utcnow,
)
from herald.security import audit, audit_verify
from herald.security.audit_admin import append_only_lifted
from herald.settings import get_settings, use_settings
from herald.telemetry import records
from tests.fixtures.database import owner_session, service_session
from tests.fixtures.factories import make_integration, make_workspace
from tests.fixtures.polling import eventually
from tests.integration.alerts.conftest import (
    Receiver,
    at,
    attempts_at,
    evaluate,
    receiver_settings,
    webhook,
)


def test_the_migration_installs_the_default_rules(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'defaults.sqlite3'}"
    runner.upgrade(url)
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            db.service_scope(session, "test")  # built-in rules belong to no workspace
            rows = session.scalars(select(AlertRule).where(AlertRule.builtin.is_(True))).all()
            installed = {rule.name: RuleSpec.of(rule) for rule in rows}
            assert all(rule.workspace_id is None for rule in rows)
    finally:
        engine.dispose()
    assert installed == {spec.name: spec for spec in DEFAULT_RULES}


@pytest.fixture
def defaults(alerting: Engine) -> Engine:
    with service_session() as session:
        install(session)
    return alerting


def _healthy(minute: float) -> None:
    with service_session() as session:
        for queue in ("default", "publish", "tokens", "alerts"):
            session.merge(
                Heartbeat(queue=queue, sent_at=at(minute), received_at=at(minute), worker="w1")
            )
        session.merge(JobRun(job="herald.posts.dispatch_due", last_succeeded_at=at(minute)))
        audit_verify.verify_and_record(session)


def firing() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    with service_session() as session:
        rows = session.execute(
            select(AlertRule.name, Alert.labels, Alert.status)
            .join(Alert, Alert.rule_id == AlertRule.id)
            .where(Alert.status == AlertStatus.FIRING)
        ).all()
    for name, labels, _ in rows:
        found.setdefault(name, []).append(labels)
    return found


def test_a_healthy_system_raises_nothing(defaults: Engine) -> None:
    _healthy(0)
    attempts_at(0, ["published"] * 20)
    evaluate(None, 0)
    assert firing() == {}


def test_failed_jobs_spike_needs_more_than_ten_attempts(defaults: Engine) -> None:
    _healthy(0)
    attempts_at(0, ["failed"] * 5 + ["published"] * 5)  # 50 %, but only 10 attempts
    evaluate(None, 0)
    assert "Failed jobs spike" not in firing()
    attempts_at(0, ["published"])  # 11 attempts, 45 % failed
    evaluate(None, 0)
    assert "Failed jobs spike" in firing()


def test_a_publish_whose_process_died_warns(defaults: Engine) -> None:
    _healthy(0)
    attempts_at(0, ["published"] * 5)
    attempts_at(0, ["retry"], error_code="transient")  # an ordinary retry says nothing
    evaluate(None, 0)
    assert firing() == {}
    attempts_at(0, ["reconciled"], error_code="worker_lost")  # the sweep found it published
    evaluate(None, 0)
    assert set(firing()) == {"Publishing workers lost"}


def _refreshes(minute: float, outcomes: list[str]) -> None:
    with service_session() as session:
        integration = make_integration(session, make_workspace(session))
        for n, outcome in enumerate(outcomes):
            session.add(
                TokenRefreshAttempt(
                    workspace_id=integration.workspace_id,
                    integration_id=integration.id,
                    provider=integration.provider,
                    started_at=at(minute) - timedelta(seconds=n + 1),
                    outcome=outcome,
                    token_version_before=1,
                )
            )


def test_token_refresh_failures_warn_and_repeated_ones_are_critical(defaults: Engine) -> None:
    _healthy(0)
    _refreshes(0, ["refreshed"] * 5 + ["failed"])  # 83 % over 6
    evaluate(None, 0)
    assert set(firing()) == {"Token refresh failures"}
    _refreshes(1, ["failed"] * 12)  # now 5 / 18 succeeded: both hold
    evaluate(None, 1)
    assert {"Token refresh failures", "Repeated token failures"} <= set(firing())


def test_high_latency_and_queue_backlog(defaults: Engine) -> None:
    _healthy(0)
    attempts_at(0, ["published"] * 3, latency_ms=45_000)
    with service_session() as session:
        integration = make_integration(session, make_workspace(session))
        session.add_all(
            Post(
                workspace_id=integration.workspace_id,
                integration_id=integration.id,
                content="x",
                scheduled_at=at(-1),
                status=PostStatus.SCHEDULED,
                idempotency_key=f"backlog-{n}",
            )
            for n in range(101)
        )
    evaluate(None, 0)
    assert {"High publish latency", "Queue backlog"} <= set(firing())


def test_workers_down_inhibits_queue_not_consumed(defaults: Engine, receiver: Receiver) -> None:
    from tests.integration.alerts.conftest import notify

    settings = receiver_settings(ops=webhook(receiver.url))
    _healthy(0)
    evaluate(settings, 10)  # ten minutes without a heartbeat on any queue
    assert {"Workers down", "Queue not consumed"} <= set(firing())
    assert {labels["queue"] for labels in firing()["Queue not consumed"]} == {
        "default",
        "publish",
        "tokens",
        "alerts",
    }
    notify(settings, 10)
    told = {a["rule"] for r in receiver.requests for a in r.json()["alerts"]}
    assert "Workers down" in told
    assert "Queue not consumed" not in told  # inhibited by the critical "Workers down"


def test_queue_not_consumed_fires_for_a_queue_no_worker_ever_consumed(defaults: Engine) -> None:
    """A queue beat sends heartbeats to but no worker listens on (a worker started without
    ``-Q alerts``) has no heartbeat row to age: its age counts from when beat first expected it."""
    queues = ("default", "publish", "tokens", "alerts")
    records.record_queues_expected(queues, at(0))
    for minute in (0, 2, 4):
        with service_session() as session:
            for queue in queues[:3]:
                session.merge(
                    Heartbeat(queue=queue, sent_at=at(minute), received_at=at(minute), worker="w1")
                )
            session.merge(JobRun(job="herald.posts.dispatch_due", last_succeeded_at=at(minute)))
        evaluate(None, minute)
    assert [labels["queue"] for labels in firing()["Queue not consumed"]] == ["alerts"]
    records.record_queues_expected(queues, at(4))  # beat restarted: the first start is kept
    evaluate(None, 4.5)
    assert [labels["queue"] for labels in firing()["Queue not consumed"]] == ["alerts"]


def test_periodic_job_missed_when_dispatch_stops_succeeding(defaults: Engine) -> None:
    _healthy(0)
    evaluate(None, 0.5)
    assert "Periodic job missed" not in firing()
    with service_session() as session:  # workers alive, but dispatch stopped at minute 0
        for queue in ("default", "publish", "tokens", "alerts"):
            session.merge(Heartbeat(queue=queue, sent_at=at(3), received_at=at(3), worker="w"))
    evaluate(None, 3)
    [labels] = firing()["Periodic job missed"]
    assert labels["task"] == "herald.posts.dispatch_due"


def test_audit_chain_broken_fires_on_the_recorded_verifier_result(defaults: Engine) -> None:
    _healthy(0)
    with service_session() as session:
        for n in range(3):
            audit.record(session, audit.EventType.ADMIN_ACTION, message=f"event {n}")
    with owner_session() as session, append_only_lifted(session):  # the owner edits the log
        first = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).first()
        session.execute(update(AuditEvent).where(AuditEvent.id == first).values(message="edited"))
    with service_session() as session:
        report = audit_verify.verify_and_record(session)
    assert not report.ok
    check_alerts(get_settings(), now=utcnow() + timedelta(seconds=1))  # the verifier ran now
    assert "Audit chain broken" in firing()


def test_the_evaluate_task_runs_on_a_worker_and_notifies(
    defaults: Engine, worker: Any, celery_app: Any, receiver: Receiver
) -> None:
    """Beat's task end to end: evaluate on a real worker, which queues notify after commit."""
    settings = receiver_settings(ops=webhook(receiver.url))
    previous = get_settings()
    use_settings(settings)
    try:
        with service_session() as session:  # no heartbeat at all: workers down now
            session.execute(text("DELETE FROM heartbeats"))
        celery_app.signature("herald.alerts.evaluate", kwargs={}).apply_async()
        eventually(lambda: receiver.requests, what="the receiver to be notified")
    finally:
        use_settings(previous)
    told = {a["rule"] for r in receiver.requests for a in r.json()["alerts"]}
    assert "Workers down" in told


def test_beat_runs_evaluation_every_minute_and_delivery_often() -> None:
    schedule = beat_schedule(get_settings(), QUEUES)
    assert schedule["evaluate-alerts"]["task"] == "herald.alerts.evaluate"
    assert schedule["evaluate-alerts"]["schedule"] == 60
    assert schedule["deliver-alert-notifications"]["task"] == "herald.alerts.notify"
    assert schedule["verify-audit-chain"]["task"] == "herald.audit.verify_chain"
