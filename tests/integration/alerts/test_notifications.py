"""Notifications delivered to a real local HTTP receiver and a real SMTP server (aiosmtpd):
one delivery per transition per receiver, retries, signatures, grouping, silences,
inhibition, PagerDuty's actions."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from typing import Any

import pytest

from herald.alerts import service
from herald.alerts.channels import Delivery, DeliveryFailed, Email
from herald.alerts.engine import service_sessions
from herald.alerts.matchers import Matcher
from herald.alerts.notify import budget_s, deliver
from herald.models import NotificationStatus
from herald.security import signing
from herald.security.audit import Actor
from herald.settings import AlertReceiver
from herald.telemetry.figures import Window, compute
from tests.fixtures.database import service_session
from tests.integration.alerts.conftest import (
    WEBHOOK_SECRET,
    Receiver,
    acknowledge,
    add_rule,
    alerts_of,
    at,
    errors_at,
    evaluate,
    notify,
    outbox_of,
    receiver_settings,
    webhook,
)

pytestmark = pytest.mark.usefixtures("alerting")


def statuses(received: list[Any]) -> list[str]:
    return [r.json()["status"] for r in received]


def test_each_transition_reaches_each_receiver_exactly_once(receiver: Receiver) -> None:
    settings = receiver_settings(
        ops=webhook(receiver.url + "/hook"),
        chat=AlertReceiver.model_validate(
            {
                "type": "slack",
                "url": receiver.url + "/slack",
                "group_wait_s": 0,
                "group_interval_s": 0,
            }
        ),
    )
    rule = add_rule()
    errors_at(0, 5)
    for _ in range(3):
        evaluate(settings, 0)
        notify(settings, 0)
    errors_at(1, 5)
    evaluate(settings, 1)
    notify(settings, 1)
    hooks = [r for r in receiver.requests if r.path == "/hook"]
    slack = [r for r in receiver.requests if r.path == "/slack"]
    assert statuses(hooks) == ["firing"]
    assert len(slack) == 1
    assert "FIRING" in slack[0].json()["text"]
    evaluate(settings, 2)  # clear
    notify(settings, 2)
    notify(settings, 3)
    hooks = [r for r in receiver.requests if r.path == "/hook"]
    assert statuses(hooks) == ["firing", "resolved"]
    assert len([r for r in receiver.requests if r.path == "/slack"]) == 2
    [alert] = alerts_of(rule)
    body = hooks[0].json()
    assert body["alerts"][0]["fingerprint"] == alert.fingerprint
    assert body["alerts"][0]["labels"]["severity"] == "warning"
    assert {n.status for n in outbox_of(rule)} == {NotificationStatus.SENT}


def _verify_independently(headers: dict[str, str], body: bytes) -> int:
    """What an integrator writes from docs/alerts.md, without Herald's code."""
    timestamp = headers["X-Herald-Timestamp"]
    delivery = headers["X-Herald-Delivery"]
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= 300
    valid = hmac.compare_digest(headers["X-Herald-Signature"], f"v1={expected}")
    return 200 if fresh and valid else 401


def test_webhook_signatures_verify_at_the_receiver(receiver: Receiver) -> None:
    receiver.check = _verify_independently
    settings = receiver_settings(ops=webhook(receiver.url))
    add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    [request] = receiver.requests
    assert request.status == 200
    assert signing.verify(WEBHOOK_SECRET, request.headers, request.body)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(WEBHOOK_SECRET, request.headers, request.body + b" ")
    with pytest.raises(signing.SignatureInvalid):  # replayed ten minutes later
        signing.verify(WEBHOOK_SECRET, request.headers, request.body, now=time.time() + 600)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify("another-secret", request.headers, request.body)


def test_a_receiver_that_fails_then_recovers_gets_the_transition_once(
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 503, 502]
    settings = receiver_settings(ops=webhook(receiver.url)).model_copy(
        update={"alert_send_tries": 2}
    )
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    report = notify(settings, 0)  # two tries, both refused: retried later
    assert (report.sent, report.retrying) == (0, 1)
    [row] = outbox_of(rule)
    assert row.status is NotificationStatus.PENDING
    assert row.attempts == 1
    assert row.last_error == "receiver answered HTTP 503"
    assert notify(settings, 0.2).sent == 0  # not due before its backoff
    report = notify(settings, 1)  # one more refusal, then accepted
    assert report.sent == 1
    assert len(receiver.requests) == 4
    assert len(receiver.accepted()) == 1
    assert len({r.headers["X-Herald-Delivery"] for r in receiver.requests}) == 1
    notify(settings, 2)
    assert len(receiver.accepted()) == 1
    [row] = outbox_of(rule)
    assert row.status is NotificationStatus.SENT


def test_receivers_that_never_recover_are_given_up_counted_and_leak_no_secret(
    receiver: Receiver, log_lines: list[dict[str, Any]]
) -> None:
    """Secrets of every kind (a Slack URL, a webhook key, a PagerDuty routing key) reach the
    receiver and nothing else: no outbox row, no stored error, no log line."""
    canary = "canary-" + "7" * 12
    receiver.answers = [500] * 10
    quick = {"group_wait_s": 0, "group_interval_s": 0}
    settings = receiver_settings(
        chat=AlertReceiver.model_validate(
            {"type": "slack", "url": f"{receiver.url}/services/{canary}-url", **quick}
        ),
        hook=AlertReceiver.model_validate(
            {"type": "webhook", "url": receiver.url, "secret": f"{canary}-key", **quick}
        ),
        pd=AlertReceiver.model_validate(
            {"type": "pagerduty", "routing_key": f"{canary}-routing", **quick}
        ),
    ).model_copy(
        update={
            "alert_notify_max_attempts": 2,
            "pagerduty_events_url": f"{receiver.url}/v2/enqueue",
        }
    )
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    report = notify(settings, 5)
    assert report.failed == 3
    rows = outbox_of(rule)
    assert {(r.receiver, r.status, r.attempts) for r in rows} == {
        (name, NotificationStatus.FAILED, 2) for name in ("chat", "hook", "pd")
    }
    with service_session() as session:
        [failures] = compute(
            session,
            "events.count",
            Window(at(0), at(10)),
            filters={"name": "alerts.notification_failed"},
        )
    assert failures.value == 3
    assert any(canary in r.body.decode() or canary in r.path for r in receiver.requests)
    stored = json.dumps([(r.payload, r.last_error) for r in rows], default=str)
    assert canary not in stored
    assert canary not in json.dumps(log_lines, default=str)
    assert any(line.get("event") == "alert.notification_failed" for line in log_lines)


def test_group_wait_group_interval_and_repeat_interval(receiver: Receiver) -> None:
    settings = receiver_settings(
        ops=webhook(receiver.url, group_wait_s=60, group_interval_s=300, repeat_interval_s=900)
    )
    add_rule(metric="events.count", filters={}, group_by=["name"])
    errors_at(0, 5, "test.a")
    evaluate(settings, 0)
    notify(settings, 0)
    assert receiver.requests == []  # group wait
    errors_at(0.5, 5, "test.b")
    evaluate(settings, 0.5)  # a second alert of the same group, inside the wait
    notify(settings, 1.1)
    [first] = receiver.requests
    assert [a["labels"]["name"] for a in first.json()["alerts"]] == ["test.a", "test.b"]
    for minute in range(2, 20):  # both keep firing
        errors_at(minute, 5, "test.a")
        errors_at(minute, 5, "test.b")
        evaluate(settings, minute)
        notify(settings, minute)
    # Nothing changed: sent again only after the repeat interval (15 min).
    assert [r.json()["status"] for r in receiver.requests] == ["firing", "firing"]
    repeat = receiver.requests[1].json()
    assert len(repeat["alerts"]) == 2
    errors_at(20, 5, "test.a")  # test.b clears, 3 minutes after the repeat went out
    evaluate(settings, 20)
    notify(settings, 20)
    assert len(receiver.requests) == 2  # the change waits for the group interval (5 min)
    notify(settings, 22.1)
    assert len(receiver.requests) == 3
    last = receiver.requests[-1].json()
    assert [(a["labels"]["name"], a["status"]) for a in last["alerts"]] == [("test.b", "resolved")]


def test_a_silence_holds_notifications_until_it_ends(receiver: Receiver) -> None:
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule(labels={"team": "ops"})
    with service_session() as session:
        silence = service.create_silence(
            session,
            service.ALL,
            [
                Matcher(name="team", op="=~", value="op.*"),
                Matcher(name="severity", value="warning"),
            ],
            starts_at=at(0),
            ends_at=at(5),
            actor=Actor("user", "alice"),
            now=at(0),
        )
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    notify(settings, 3)
    assert receiver.requests == []
    [view] = _views()
    assert view.silenced_by == [silence.id]
    for minute in (5, 6):
        errors_at(minute, 5)
        evaluate(settings, minute)
        notify(settings, minute)
    assert statuses(receiver.requests) == ["firing"]
    assert len(alerts_of(rule)) == 1


def _views() -> list[service.AlertView]:
    with service_session() as session:
        return service.list_alerts(session, service.ALL, now=at(1))


def test_an_alert_resolved_while_silenced_is_never_sent(receiver: Receiver) -> None:
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule()
    with service_session() as session:
        service.create_silence(
            session,
            service.ALL,
            [Matcher(name="severity", op="!=", value="critical")],
            starts_at=at(0),
            ends_at=at(5),
            actor=Actor("user", "alice"),
            now=at(0),
        )
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    evaluate(settings, 1)  # resolved while silenced
    notify(settings, 6)
    assert receiver.requests == []
    assert {n.status for n in outbox_of(rule)} == {NotificationStatus.SUPPRESSED}


def test_a_firing_critical_rule_inhibits_the_warnings_it_names(receiver: Receiver) -> None:
    settings = receiver_settings(ops=webhook(receiver.url))
    warning = add_rule(name="Token refresh failures", threshold=1)
    add_rule(
        name="Repeated token failures",
        threshold=3,
        severity="critical",
        inhibits=["Token refresh failures"],
    )
    errors_at(0, 5)  # both hold
    evaluate(settings, 0)
    notify(settings, 0)
    assert [r.json()["alerts"][0]["rule"] for r in receiver.requests] == ["Repeated token failures"]
    [view] = [v for v in _views() if v.rule == "Token refresh failures"]
    assert view.inhibited
    errors_at(1, 2)  # only the warning holds now: it is no longer inhibited
    evaluate(settings, 1)
    notify(settings, 1)
    notify(settings, 2)
    sent = [(a["rule"], a["status"]) for r in receiver.requests for a in r.json()["alerts"]]
    assert ("Token refresh failures", "firing") in sent
    assert ("Repeated token failures", "resolved") in sent
    assert len(alerts_of(warning)) == 1


def test_pagerduty_trigger_acknowledge_resolve_with_the_identity_as_dedup_key(
    receiver: Receiver,
) -> None:
    settings = receiver_settings(
        pd=AlertReceiver.model_validate(
            {
                "type": "pagerduty",
                "routing_key": "R0UTINGKEY",
                "group_wait_s": 0,
                "group_interval_s": 0,
            }
        )
    ).model_copy(update={"pagerduty_events_url": receiver.url + "/v2/enqueue"})
    rule = add_rule(severity="error")
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    [alert] = alerts_of(rule)
    acknowledge(alert.id, settings, 0.25, by="bob")
    notify(settings, 0.5)
    evaluate(settings, 1)
    notify(settings, 1)
    events = [r.json() for r in receiver.requests]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {alert.fingerprint}
    assert {e["routing_key"] for e in events} == {"R0UTINGKEY"}
    assert events[0]["payload"]["severity"] == "error"
    assert events[0]["payload"]["source"] == "herald"


def test_a_run_starts_no_delivery_past_its_budget_and_the_next_run_goes_on(
    receiver: Receiver,
) -> None:
    """Per-alert deliveries to a receiver that takes its time: a run past its budget starts no
    more, and what it did not start waits, pending, for the next run. Before, a run over many
    slow deliveries met the task's soft time limit mid-group: every outcome of that group was
    rolled back, and the next run did the same, for ever."""
    settings = receiver_settings(
        pd=AlertReceiver.model_validate(
            {"type": "pagerduty", "routing_key": "R0UTINGKEY", "group_wait_s": 0}
        )
    ).model_copy(update={"pagerduty_events_url": receiver.url + "/v2/enqueue"})

    receiver.trickle_s = 0.01  # each answer takes about half a second
    rules = [add_rule(severity="error") for _ in range(3)]
    errors_at(0, 5)
    evaluate(settings, 0)
    at_minute = at(0) + timedelta(seconds=2)

    reports = [
        deliver(service_sessions("test"), settings, now=at_minute, budget=0.1) for _ in range(3)
    ]

    assert [r.sent for r in reports] == [1, 1, 1]
    assert reports[0].deferred + reports[0].deferred_groups >= 1
    events = [r.json() for r in receiver.requests]
    assert len(events) == 3
    assert len({e["dedup_key"] for e in events}) == 3  # each alert once
    for rule in rules:
        assert [n.status for n in outbox_of(rule)] == [NotificationStatus.SENT]


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, list[bytes]]]:
    pytest.importorskip("aiosmtpd")
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            received.append(envelope.content)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, received
    finally:
        controller.stop()


def test_email_goes_out_over_smtp(smtp_server: tuple[str, int, list[bytes]]) -> None:
    host, port, received = smtp_server
    settings = receiver_settings(
        mail=AlertReceiver.model_validate(
            {
                "type": "email",
                "to": ["oncall@example.com"],
                "group_wait_s": 0,
                "group_interval_s": 0,
            }
        )
    ).model_copy(update={"smtp_host": host, "smtp_port": port})
    add_rule(name="Failed jobs spike", runbook="docs/alerts.md#failed-jobs-spike")
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    evaluate(settings, 1)
    notify(settings, 1)
    assert len(received) == 2
    first, second = (message_from_bytes(raw) for raw in received)
    assert first["Subject"] == "[FIRING:1] Failed jobs spike"
    assert first["To"] == "oncall@example.com"
    assert "docs/alerts.md#failed-jobs-spike" in first.get_payload()
    assert second["Subject"] == "[RESOLVED:1] Failed jobs spike"


def test_a_transition_for_an_unconfigured_receiver_fails_visibly(receiver: Receiver) -> None:
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule(receivers=["ops"])
    errors_at(0, 5)
    evaluate(settings, 0)
    gone = settings.model_copy(update={"alert_receivers": {}, "alert_default_receivers": []})
    notify(gone, 0)
    [row] = outbox_of(rule)
    assert row.status is NotificationStatus.FAILED
    assert row.last_error == "no receiver named 'ops' is configured"


def test_delivery_timestamps_follow_the_clock_of_the_run(receiver: Receiver) -> None:
    settings = receiver_settings(ops=webhook(receiver.url))
    rule = add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    notify(settings, 0)
    [row] = outbox_of(rule)
    assert row.sent_at == at(0) + timedelta(seconds=2)


def test_a_receiver_answering_without_end_does_not_hold_the_notification(
    receiver: Receiver,
) -> None:
    """Only the receiver's status is read: an answer that never ends held the notifier."""
    receiver.endless = True
    settings = receiver_settings(ops=webhook(receiver.url))
    add_rule()
    errors_at(0, 5)
    evaluate(settings, 0)
    sender = threading.Thread(target=notify, args=(settings, 0), daemon=True)
    sender.start()
    sender.join(timeout=20)
    assert not sender.is_alive(), "the notifier was still reading the answer after 20 s"
    [request] = receiver.requests
    assert request.status == 202


class _TricklingSMTP(threading.Thread):
    """An SMTP server that takes the message, then sends its final reply one byte at a time,
    each well within the client's socket timeout (a hostile or overloaded relay)."""

    def __init__(self, pace_s: float, reply_bytes: int, phase: str = "data") -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.pace_s = pace_s
        self.phase = phase
        self.padding = b"x" * reply_bytes

    def _trickle(self, connection: socket.socket, reply: bytes) -> None:
        for byte in reply:
            connection.sendall(bytes([byte]))
            time.sleep(self.pace_s)  # noqa: TID251 -- the relay's pace, not a wait

    def _say(self, connection: socket.socket, phase: str, code: bytes) -> None:
        if phase == self.phase:
            self._trickle(connection, code + b" " + self.padding + b"\r\n")
        else:
            connection.sendall(code + b" ok\r\n")

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def run(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.server.accept()
            with connection, connection.makefile("rb") as lines:
                self._say(connection, "greeting", b"220")
                for line in lines:
                    verb = line[:4].upper()
                    if verb == b"DATA":
                        connection.sendall(b"354 go\r\n")
                        for body in lines:
                            if body == b".\r\n":
                                break
                        self._say(connection, "data", b"250")
                    elif verb == b"QUIT":
                        self._say(connection, "quit", b"221")
                        return
                    else:
                        connection.sendall(b"250 ok\r\n")

    def stop(self) -> None:
        self.server.close()


@pytest.mark.parametrize("phase", ["greeting", "data", "quit"])
def test_an_smtp_exchange_is_bounded_in_all_not_per_read(phase: str) -> None:
    """smtplib's timeout bounds each socket read: a relay trickling its reply held the notify
    run past its budget and the task's soft time limit, which rolled the run back, and the
    next run sent the same alert again under a new Message-ID. The whole exchange now has
    HERALD_SMTP_TIMEOUT_S (after the connect)."""
    relay = _TricklingSMTP(pace_s=0.1, reply_bytes=80, phase=phase)  # about 8 s for a reply
    relay.start()
    settings = receiver_settings().model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": relay.port, "smtp_timeout_s": 1.0}
    )
    config = AlertReceiver.model_validate({"type": "email", "to": ["oncall@example.com"]})
    item = {
        "status": "firing",
        "severity": "error",
        "value": 1.0,
        "rule": "r",
        "labels": {},
        "annotations": {},
        "starts_at": "2026-01-01T00:00:00Z",
    }
    started = time.monotonic()
    try:
        if phase != "greeting":  # accepted (its 250 under way), then cut: not a failure
            Email(config, settings).send(Delivery("d1", "mail", "g", [item]))
        else:
            with pytest.raises(DeliveryFailed) as failed:
                Email(config, settings).send(Delivery("d1", "mail", "g", [item]))
            assert failed.value.retryable
    finally:
        relay.stop()
    assert time.monotonic() - started < 4.0
    assert budget_s(settings) < settings.task_soft_time_limit_s - 2 * settings.smtp_timeout_s
