"""A resolve of an alert a receiver was told about, or is being told about, always goes out
(docs/alerts.md): through a receiver's outage, and when the rule is disabled or deleted."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from herald.alerts import service
from herald.alerts.service import ALL, Conflict
from herald.models import AlertRule, AlertStatus
from herald.security.audit import Actor
from tests.fixtures.database import service_session
from tests.integration.alerts.conftest import (
    Receiver,
    add_rule,
    alerts_of,
    errors_at,
    evaluate,
    notify,
    receiver_settings,
    webhook,
)

pytestmark = pytest.mark.usefixtures("alerting")


def _told(receiver: Receiver) -> list[str]:
    return [f"{a['status']}" for r in receiver.requests for a in r.json()["alerts"]]


def test_a_resolve_while_the_firing_waits_for_its_retry_follows_it(receiver: Receiver) -> None:
    """The firing's first try failed (503) and waits to be tried again; the alert resolved
    meanwhile. The resolve was dropped as "never told", then the firing went out alone: a
    PagerDuty incident or a webhook consumer's page stayed open for good."""
    settings = receiver_settings(ops=webhook(receiver.url)).model_copy(
        update={"alert_notify_backoff_s": 300.0}  # a receiver down for minutes
    )
    add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    receiver.answers = [503]
    notify(settings, 0)  # the firing fails once: retried after the notify backoff
    evaluate(settings, 2)  # the window is quiet again: resolved
    for minute in (2, 3, 4, 6, 8, 12, 16):
        notify(settings, minute)
    assert _told(receiver)[-2:] == ["firing", "resolved"]


def test_disabling_a_firing_rule_resolves_its_alerts_and_tells_the_receivers(
    receiver: Receiver,
) -> None:
    """A disabled rule was never evaluated again: its open alerts stayed firing, were repeated
    every repeat interval, and a disabled inhibiting rule muted its targets for good."""
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    with service_session() as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(enabled=False))
    evaluate(settings, 1)
    notify(settings, 1)
    assert [a.status for a in alerts_of(rule)] == [AlertStatus.RESOLVED]
    assert _told(receiver) == ["firing", "resolved"]


def test_a_rule_with_open_alerts_is_not_deleted_out_from_under_them(receiver: Receiver) -> None:
    """Deleting it removed its alerts and their queued notifications (ON DELETE CASCADE):
    the receivers told it fired never heard it resolved. Disable it first; delete it once its
    alerts are resolved."""
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    actor: Any = Actor("user", "ops-admin")
    with service_session() as session, pytest.raises(Conflict, match="open alerts"):
        service.delete_rule(session, ALL, rule, actor=actor)
    with service_session() as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(enabled=False))
    evaluate(settings, 1)
    notify(settings, 1)
    with service_session() as session:
        service.delete_rule(session, ALL, rule, actor=actor)
    assert _told(receiver) == ["firing", "resolved"]


def test_a_receiver_taken_off_a_firing_rule_still_hears_it_resolve(receiver: Receiver) -> None:
    """A transition went only to the rule's receivers of the moment: a receiver told the alert
    fired, then taken off the rule (or off HERALD_ALERT_DEFAULT_RECEIVERS), never heard it
    resolve, and the one put on instead was never told it fired."""
    settings = receiver_settings(ops=webhook(receiver.url), other=webhook(receiver.url + "/other"))
    rule = add_rule(receivers=["ops"])
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    with service_session() as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(receivers=["other"]))
    evaluate(settings, 2)
    notify(settings, 2)
    told = [(r.path, a["status"]) for r in receiver.requests for a in r.json()["alerts"]]
    assert told == [("/", "firing"), ("/", "resolved")]


def test_an_edited_rule_reaches_its_open_alerts(receiver: Receiver) -> None:
    """An alert kept the name and severity its rule had when it opened: a firing alert whose
    rule went from critical to warning still inhibited, and a silence on the new name missed
    it until it resolved."""
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule(name="Old name", severity="critical")
    errors_at(0, 5)
    errors_at(1, 5)
    evaluate(settings, 0)
    with service_session() as session:
        session.execute(
            update(AlertRule)
            .where(AlertRule.id == rule)
            .values(name="New name", severity="warning")
        )
    evaluate(settings, 1)
    [alert] = alerts_of(rule)
    assert alert.status is AlertStatus.FIRING
    assert (alert.labels["rule"], alert.labels["severity"]) == ("New name", "warning")
    assert alert.severity.value == "warning"
