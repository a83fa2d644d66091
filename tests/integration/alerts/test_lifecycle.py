"""Alert rules as time-series fixtures, on the real Postgres (like ``promtool test rules``).

Each test writes a series of events per minute, evaluates the rule at chosen minutes, and
checks the states and the transitions queued for receivers. The rule (unless told): more than
2 ``test.errors`` in the last minute, warning.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from herald import db
from herald.models import AlertRule, AlertStatus
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.integration.alerts.conftest import (
    Receiver,
    acknowledge,
    add_rule,
    alerts_of,
    another_engine,
    at,
    attempts_at,
    errors_at,
    evaluate,
    outbox_of,
    receiver_settings,
    sessions_on,
    webhook,
)

pytestmark = pytest.mark.usefixtures("alerting")


@pytest.fixture
def settings(receiver: Receiver) -> Settings:
    return receiver_settings(ops=webhook(receiver.url))


def states(rule_id: object) -> list[str]:
    return [a.status.value for a in alerts_of(rule_id)]  # type: ignore[arg-type]


def kinds(rule_id: object) -> list[str]:
    return [n.kind for n in outbox_of(rule_id)]  # type: ignore[arg-type]


def test_rule_fires_when_the_condition_holds(settings: Settings) -> None:
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.FIRING
    assert alert.value == 5
    assert alert.fired_at is not None
    assert alert.labels["rule"]
    assert alert.labels["severity"] == "warning"
    assert kinds(rule) == ["firing"]


def test_rule_does_not_fire_below_the_threshold(settings: Settings) -> None:
    rule = add_rule()
    for minute in range(3):
        errors_at(minute, 2)
        evaluate(settings, minute)
    assert alerts_of(rule) == []
    assert outbox_of(rule) == []


def test_flap_stays_pending_and_never_fires(settings: Settings) -> None:
    rule = add_rule(for_s=120)
    errors_at(0, 5)
    evaluate(settings, 0)
    assert states(rule) == ["pending"]
    errors_at(1, 5)
    evaluate(settings, 1)
    assert states(rule) == ["pending"]  # 60 s of 120
    evaluate(settings, 2)  # clear before `for` ran out
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.RESOLVED
    assert alert.fired_at is None
    assert outbox_of(rule) == []  # nobody is told about a flap


def test_for_elapsed_fires_once(settings: Settings) -> None:
    rule = add_rule(for_s=120)
    for minute in range(4):
        errors_at(minute, 5)
        evaluate(settings, minute)
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.FIRING
    assert alert.pending_since < alert.fired_at  # type: ignore[operator]
    assert kinds(rule) == ["firing"]


def test_keep_firing_for_rides_out_a_gap_then_resolves(settings: Settings) -> None:
    rule = add_rule(keep_firing_for_s=120)
    errors_at(0, 5)
    evaluate(settings, 0)
    evaluate(settings, 1)  # clear: recovering, still firing for receivers
    assert states(rule) == ["recovering"]
    errors_at(2, 5)
    evaluate(settings, 2)  # holds again: back to firing, nothing new to tell
    assert states(rule) == ["firing"]
    evaluate(settings, 3)
    evaluate(settings, 4)
    assert states(rule) == ["recovering"]
    evaluate(settings, 5)  # 120 s clear
    assert states(rule) == ["resolved"]
    assert kinds(rule) == ["firing", "resolved"]


def test_resolves_when_the_condition_clears(settings: Settings) -> None:
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    evaluate(settings, 1)
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.RESOLVED
    assert alert.resolved_at is not None
    assert kinds(rule) == ["firing", "resolved"]
    errors_at(2, 5)
    evaluate(settings, 2)  # a new occurrence is a new alert of the same identity
    first, second = alerts_of(rule)
    assert first.fingerprint == second.fingerprint
    assert second.status is AlertStatus.FIRING


def test_no_data_follows_the_rules_behaviour(settings: Settings) -> None:
    expected = {
        "state": (["no_data"], ["no_data"]),
        "alerting": (["firing"], ["firing"]),
        "ok": ([], []),
        "keep_last": ([], []),
    }
    rules = {
        behaviour: add_rule(
            metric="publish.failure_rate", filters={}, min_samples=5, no_data_state=behaviour
        )
        for behaviour in expected
    }
    evaluate(settings, 0)  # no attempts at all: fewer samples than the minimum
    for behaviour, rule in rules.items():
        assert (states(rule), kinds(rule)) == expected[behaviour], behaviour


def test_no_data_keep_last_keeps_a_firing_alert_firing(settings: Settings) -> None:
    rule = add_rule(
        metric="publish.failure_rate",
        filters={},
        threshold=0.5,
        min_samples=2,
        no_data_state="keep_last",
    )
    attempts_at(0, ["failed", "failed", "transient"])
    evaluate(settings, 0)
    assert states(rule) == ["firing"]
    evaluate(settings, 2)  # no attempts in the window: no data, and the rule keeps the state
    assert states(rule) == ["firing"]
    assert kinds(rule) == ["firing"]


def test_no_data_alert_resolves_when_data_returns(settings: Settings) -> None:
    rule = add_rule(
        metric="publish.failure_rate",
        filters={},
        threshold=0.5,
        min_samples=2,
        no_data_state="state",
    )
    evaluate(settings, 0)
    assert states(rule) == ["no_data"]
    attempts_at(1, ["published", "published", "published"])
    evaluate(settings, 1)
    assert states(rule) == ["resolved"]
    assert kinds(rule) == ["no_data", "resolved"]


def test_evaluation_error_follows_the_rules_behaviour(settings: Settings) -> None:
    expected = {"state": ["error"], "alerting": ["firing"], "ok": [], "keep_last": []}
    # A workspace filter that is not a UUID makes the figure refuse to compute.
    rules = {
        behaviour: add_rule(
            metric="publish.attempts", filters={"workspace_id": "nope"}, error_state=behaviour
        )
        for behaviour in expected
    }
    outcomes = evaluate(settings, 0)
    assert all(o.error and "not a UUID" in o.error for o in outcomes)
    for behaviour, rule in rules.items():
        assert states(rule) == expected[behaviour], behaviour
        with service_session() as session:
            stored = session.get(AlertRule, rule)
            assert stored is not None
            assert stored.last_error
            assert "not a UUID" in stored.last_error


def test_error_keep_last_keeps_a_firing_alert_firing(settings: Settings) -> None:
    rule = add_rule(error_state="keep_last")
    errors_at(0, 5)
    evaluate(settings, 0)
    with service_session() as session:  # break the rule's figure from now on
        stored = session.get(AlertRule, rule)
        assert stored is not None
        stored.group_by = ["no_such_label"]
    evaluate(settings, 1)
    evaluate(settings, 2)
    assert states(rule) == ["firing"]
    assert kinds(rule) == ["firing"]


def test_acknowledgement_is_recorded_and_cleared_when_the_alert_resolves(
    settings: Settings,
) -> None:
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    [alert] = alerts_of(rule)
    acknowledge(alert.id, settings, 0.5, by="alice", note="looking")
    [acked] = alerts_of(rule)
    assert (acked.acknowledged_by, acked.ack_note) == ("alice", "looking")
    assert acked.acknowledged_at == at(0.5)
    evaluate(settings, 1)  # resolves
    errors_at(2, 5)
    evaluate(settings, 2)  # fires again: a new occurrence nobody has acknowledged
    resolved, current = alerts_of(rule)
    assert resolved.status is AlertStatus.RESOLVED
    assert current.status is AlertStatus.FIRING
    assert current.acknowledged_at is None
    assert kinds(rule) == ["firing", "acknowledged", "resolved", "firing"]


def test_repeated_evaluations_deduplicate(settings: Settings) -> None:
    rule = add_rule()
    errors_at(0, 5)
    for _ in range(5):
        evaluate(settings, 0)
    assert states(rule) == ["firing"]
    assert kinds(rule) == ["firing"]


def race(settings: Settings, minute: int, engines: list[Engine]) -> None:
    """Evaluate at ``minute`` from several engines released at the same instant."""
    barrier = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            barrier.wait(timeout=10)
            evaluate(settings, minute, sessions_on(engine))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []


def test_two_evaluators_at_once_open_one_alert_and_queue_one_transition(
    settings: Settings, alerting: Engine
) -> None:
    """Two evaluators, each on its own connections, race over the same rules every minute."""
    rules = [add_rule(for_s=60) for _ in range(4)]
    engines = [another_engine(db.get_service_engine()), another_engine(db.get_service_engine())]
    try:
        for minute in range(4):
            errors_at(minute, 5)
            race(settings, minute, engines)
    finally:
        for engine in engines:
            engine.dispose()
    for rule in rules:
        assert states(rule) == ["firing"]
        assert kinds(rule) == ["firing"]


def test_state_survives_a_restart_of_the_evaluator(settings: Settings, alerting: Engine) -> None:
    rule = add_rule(for_s=120)
    errors_at(0, 5)
    evaluate(settings, 0)
    # A new process: its own engine and connections; all it knows is in the database.
    fresh = another_engine(db.get_service_engine())
    try:
        for minute in (1, 2):
            errors_at(minute, 5)
            evaluate(settings, minute, sessions_on(fresh))
    finally:
        fresh.dispose()
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.FIRING
    assert alert.pending_since < at(0.5) < alert.fired_at  # type: ignore[operator]
    assert kinds(rule) == ["firing"]


def test_a_workspace_rule_reads_only_its_workspace(settings: Settings) -> None:
    from herald.telemetry import counters
    from tests.fixtures.factories import make_workspace

    with service_session() as session:
        mine, other = make_workspace(session), make_workspace(session)
        counters.increment(session, "test.errors", 5, workspace_id=other.id, at=at(0))
        counters.increment(session, "test.errors", 1, workspace_id=mine.id, at=at(0))
        mine_id = mine.id
    rule = add_rule(workspace_id=mine_id)
    evaluate(settings, 0)
    assert alerts_of(rule) == []
    with service_session() as session:
        counters.increment(session, "test.errors", 4, workspace_id=mine_id, at=at(0))
    evaluate(settings, 0)
    [alert] = alerts_of(rule)
    assert alert.workspace_id == mine_id
    assert alert.labels["workspace_id"] == str(mine_id)
