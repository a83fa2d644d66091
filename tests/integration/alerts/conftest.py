"""Alert fixtures: rules written as time series, a real local HTTP receiver, evaluation and
delivery at chosen instants (the engine takes ``now``, so no test waits for a clock)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.alerts import service
from herald.alerts.engine import RuleOutcome, SessionFactory, evaluate_all, service_sessions
from herald.alerts.notify import NotifyReport, deliver
from herald.alerts.rules import RuleSpec
from herald.models import Alert, AlertNotification, AlertRule, PublishAttempt, utcnow
from herald.security.audit import Actor
from herald.settings import AlertReceiver, Settings, get_settings
from herald.telemetry import counters
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_post, make_workspace

T0 = (utcnow() - timedelta(hours=6)).replace(second=0, microsecond=0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on loopback that records every request and answers as told."""

    server: ThreadingHTTPServer | None = None
    requests: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses for the next requests
    check: Any = None  # optional callable(headers, body) -> status
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Answer with a body that never ends (until the client goes away or the test ends).
    endless: bool = False
    location: str | None = None  # sent as Location (with a 3xx in answers: a redirect)
    cookie: str | None = None  # sent as Set-Cookie with every answer
    #: Send the answer one byte at a time, this many seconds apart (each within a read timeout).
    trickle_s: float | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            with receiver.lock:
                status = receiver.answers.pop(0) if receiver.answers else 202
                if status < 300 and receiver.check is not None:
                    status = receiver.check(headers, body)
                receiver.requests.append(Received(self.path, headers, body, status))
            if receiver.trickle_s:
                self._trickle(status, receiver.trickle_s)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if receiver.location:
                self.send_header("Location", receiver.location)
            if receiver.cookie:
                self.send_header("Set-Cookie", receiver.cookie)
            if receiver.endless:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"%x\r\n%s\r\n" % (65_536, b" " * 65_536)
                try:
                    while not receiver.stopped.is_set():
                        self.wfile.write(chunk)
                except OSError:  # the client went away
                    return
                return
            self.end_headers()
            self.wfile.write(b'{"status":"success"}')

        def do_GET(self) -> None:
            # What a client that turned a POST into a GET on a redirect asks: a page answering
            # 200, as a receiver's landing page would.
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), b"", 200))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _trickle(self, status: int, every_s: float) -> None:
            raw = b"HTTP/1.1 %d OK\r\nContent-Length: 2\r\n\r\n{}" % status
            try:
                for byte in raw:
                    if receiver.stopped.wait(every_s):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:  # the client went away
                return

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = found.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.stopped.set()
    server.shutdown()
    server.server_close()


WEBHOOK_SECRET = "whsec-test-" + uuid.uuid4().hex


def receiver_settings(**receivers: AlertReceiver) -> Settings:
    """The run's settings with these receivers as defaults, loopback allowed, no waiting."""
    return get_settings().model_copy(
        update={
            "alert_receivers": receivers,
            "alert_default_receivers": list(receivers),
            "outbound_allow_hosts": ["127.0.0.1"],
            "alert_send_tries": 1,
            "alert_send_backoff_s": 0.0,
            "alert_notify_backoff_s": 30.0,
        }
    )


def webhook(url: str, **options: Any) -> AlertReceiver:
    return AlertReceiver.model_validate(
        {
            "type": "webhook",
            "url": url,
            "secret": WEBHOOK_SECRET,
            "group_wait_s": 0,
            "group_interval_s": 0,
            **options,
        }
    )


@pytest.fixture
def alerting(committed: Engine) -> Engine:
    """A clean slate: no rules (the migration's defaults are tested on their own)."""
    with service_session() as session:
        session.execute(delete(AlertRule))
    return committed


def add_rule(workspace_id: uuid.UUID | None = None, **values: Any) -> uuid.UUID:
    spec = RuleSpec.model_validate(
        {
            "name": f"rule-{uuid.uuid4().hex[:6]}",
            "metric": "events.count",
            "filters": {"name": "test.errors"},
            "window_s": 60,
            "comparison": ">",
            "threshold": 2,
            "severity": "warning",
            **values,
        }
    )
    with service_session() as session:
        rule = AlertRule(workspace_id=workspace_id, **spec.row_values())
        session.add(rule)
        session.flush()
        return rule.id


def errors_at(minute: float, count: int, name: str = "test.errors") -> None:
    """``count`` events of ``name`` in the minute starting at ``at(minute)``."""
    with service_session() as session:
        counters.increment(session, name, count, at=at(minute))


def evaluate(
    settings: Settings | None, minute: float, sessions: SessionFactory | None = None
) -> list[RuleOutcome]:
    """Evaluate every rule one second into ``minute`` (its window then holds that minute)."""
    return evaluate_all(
        sessions or service_sessions("test"),
        settings or get_settings(),
        now=at(minute) + timedelta(seconds=1),
    )


def notify(settings: Settings, minute: float) -> NotifyReport:
    return deliver(service_sessions("test"), settings, now=at(minute) + timedelta(seconds=2))


def alerts_of(rule_id: uuid.UUID) -> list[Alert]:
    with service_session() as session:
        return list(
            session.scalars(
                select(Alert).where(Alert.rule_id == rule_id).order_by(Alert.pending_since)
            )
        )


def outbox_of(rule_id: uuid.UUID) -> list[AlertNotification]:
    with service_session() as session:
        return list(
            session.scalars(
                select(AlertNotification)
                .join(Alert, Alert.id == AlertNotification.alert_id)
                .where(Alert.rule_id == rule_id)
                .order_by(AlertNotification.next_attempt_at, AlertNotification.transition)
            )
        )


def attempts_at(
    minute: float,
    outcomes: list[str],
    *,
    provider: str = "mastodon",
    latency_ms: int = 1000,
    error_code: str | None = None,
) -> None:
    """Publish attempts with these outcomes, started in the minute before ``at(minute)`` (the
    window an evaluation at ``minute`` reads)."""
    with service_session() as session:
        workspace = make_workspace(session)
        integration = make_integration(session, workspace, provider=provider)
        post = make_post(session, integration, scheduled_at=at(minute) - timedelta(seconds=5))
        for number, outcome in enumerate(outcomes, start=1):
            started = at(minute) - timedelta(seconds=1 + (number * 7) % 50)
            session.add(
                PublishAttempt(
                    workspace_id=workspace.id,
                    post_id=post.id,
                    provider=provider,
                    attempt_number=number,
                    started_at=started,
                    finished_at=started + timedelta(milliseconds=latency_ms),
                    latency_ms=latency_ms,
                    outcome=outcome,
                    error_code=error_code,
                )
            )


@contextmanager
def _own_sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session, session.begin():
        yield session


def sessions_on(engine: Engine) -> SessionFactory:
    """Sessions on another engine: another process's connections, as far as Postgres sees."""
    return lambda: _own_sessions(engine)


def another_engine() -> Engine:
    """A second service-role engine (evaluators read every workspace)."""
    return db.make_engine(db.get_service_engine().url.render_as_string(hide_password=False))


def acknowledge(
    alert_id: uuid.UUID, settings: Settings, minute: float, *, by: str, note: str = ""
) -> None:
    with service_session() as session:
        service.acknowledge(
            session,
            service.ALL,
            alert_id,
            actor=Actor("user", by),
            note=note,
            settings=settings,
            now=at(minute),
        )
