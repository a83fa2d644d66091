"""The demo's monitoring ending: a local receiver of signed webhooks, then the health report,
the alerts the injected faults raised and the notifications that reached the receiver.

At the end of the run the demo evaluates the alert rules and delivers the notification outbox
once, in process, as ``POST /api/postiz/cron/check-alerts`` or beat's ``herald.alerts.evaluate``
and ``herald.alerts.notify`` would.

The receiver is what an operator would run behind a generic webhook: it verifies each
request's HMAC-SHA256 signature (:func:`herald.security.signing.verify`), refuses a replayed
delivery, and keeps what it accepted. The demo points Herald's alert notifications at it the
way production does (``HERALD_ALERT_RECEIVERS``, the outbound client allow-listing loopback).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from herald import db
from herald.alerts import service
from herald.alerts.engine import check_alerts, service_sessions
from herald.alerts.notify import deliver
from herald.beat_schedule import beat_schedule
from herald.celery_app import QUEUES, broker_connection
from herald.models import AlertStatus
from herald.security.signing import SignatureInvalid, verify
from herald.settings import AlertReceiver, Settings
from herald.telemetry.health import HealthReport, check_health
from herald.telemetry.state import job_intervals

RECEIVER = "demo-webhook"


@dataclass
class Received:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SignedWebhookReceiver:
    """A webhook receiver on a free loopback port, in a thread of this process."""

    def __init__(self) -> None:
        self.secret = secrets.token_hex(16)
        self.received = Received()
        seen: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    delivery = verify(owner.secret, dict(self.headers.items()), body)
                except SignatureInvalid:
                    delivery = None
                with owner.received.lock:
                    if delivery is None or delivery in seen:
                        owner.received.refused += 1
                        self.send_response(401 if delivery is None else 409)
                    else:
                        seen.add(delivery)
                        owner.received.accepted.append(json.loads(body))
                        self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # the demo prints what it received itself

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/herald-alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SignedWebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def settings(self) -> dict[str, Any]:
        """Settings that send every alert notification here, without a group wait."""
        return {
            "alert_receivers": {
                RECEIVER: AlertReceiver(
                    type="webhook",
                    url=self.url,
                    secret=self.secret,
                    group_wait_s=0.0,
                    group_interval_s=5.0,
                )
            },
            "alert_default_receivers": [RECEIVER],
            "outbound_allow_hosts": ["127.0.0.1"],
        }

    def firing_rules(self) -> set[str]:
        with self.received.lock:
            return {
                alert["rule"]
                for payload in self.received.accepted
                for alert in payload["alerts"]
                if alert["status"] == "firing"
            }


def _health(console: Console, settings: Settings) -> HealthReport:
    report = check_health(
        settings,
        lambda: broker_connection(settings),
        QUEUES,
        job_intervals(beat_schedule(settings, QUEUES)),
    )
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}[report.status]
    console.print(f"\n[bold]Health: [{colour}]{report.status}[/]")
    for reason in report.reasons:
        console.print(f"  - {reason}")
    consumed = [q.name for q in report.queues if q.consumed]
    console.print(
        f"  database {report.database.latency_ms} ms, broker {report.broker.latency_ms} ms; "
        f"queues consumed: {', '.join(consumed) or 'none'}"
    )
    publish = report.publish_last_hour
    if publish is not None:
        rate = f"{publish.failure_rate:.0%}" if publish.failure_rate is not None else "-"
        latency = f"{publish.latency_avg_s:.2f} s" if publish.latency_avg_s is not None else "-"
        console.print(
            f"  last hour: {publish.attempts} publish attempts, {publish.published} published, "
            f"{publish.failed} failed ({rate}), average provider latency {latency}"
        )
    return report


def _alerts(console: Console) -> list[str]:
    with db.session_scope() as session:
        db.service_scope(session, "demo.alerts")  # every workspace's alerts
        views = service.list_alerts(
            session, service.ALL, state=[AlertStatus.FIRING, AlertStatus.PENDING]
        )
        rows = [
            (v.rule, v.alert.status.value, v.alert.severity.value, v.alert.summary) for v in views
        ]
    table = Table(title="Alerts the injected faults raised")
    for column in ("rule", "state", "severity", "summary"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return [rule for rule, *_ in rows]


def report(
    console: Console, settings: Settings, receiver: SignedWebhookReceiver, database: Path
) -> bool:
    """Print health, alerts and notifications; True when the failed-jobs spike was raised and
    its notification reached the receiver with a valid signature."""
    check_alerts(settings)
    deliver(service_sessions("alerts.notify"), settings)
    delivered = "Failed jobs spike" in receiver.firing_rules()
    _health(console, settings)
    raised = _alerts(console)
    with receiver.received.lock:
        accepted = list(receiver.received.accepted)
        refused = receiver.received.refused
    console.print(
        f"\n[bold]Notifications at the local webhook receiver[/] ({receiver.url}): "
        f"{len(accepted)} delivered, HMAC-SHA256 signature verified on each; {refused} refused"
    )
    for payload in accepted:
        for alert in payload["alerts"]:
            line = f"  {alert['status']}: {alert['rule']} ({alert['severity']})"
            console.print(line, markup=False)
    console.print(
        "\nSee them again:  "
        f"HERALD_DATABASE_URL=sqlite:///{database} herald alerts list --state firing "
        "--state resolved",
        markup=False,
        soft_wrap=True,  # one line, to copy whole
    )
    ok = delivered and "Failed jobs spike" in raised and refused == 0
    if not ok:
        console.print("[red bold]the failed-jobs spike was not raised and delivered")
    return ok
