"""No token reaches a log line, a span or a row: a canary run over real HTTP on a real worker.

Every token the sandbox issues in this test starts with a marker nobody else uses. Posts are
published where the token travels in the URL path (Telegram's bot token, a Discord webhook)
and in the query string (Threads); networks answer with error bodies that quote the request
back (its ``Authorization`` header, its query, its form with the refresh token); one refresh
fails for good, another fails, is retried and rotates both tokens; an account is connected
through the OAuth flow (authorize, consent, code exchange with PKCE and a client secret).
Then every captured log line (every level, httpx's and httpcore's DEBUG lines included), every
exported span (name, attributes, events, links, status) and every column of every table in
the database is searched for the marker, for each token's random tail and for the
authorization code. Tables are found by reflecting the database, so a table added later is
searched too.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from celery import Celery
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine

from herald import db
from herald.alerts.engine import check_alerts, service_sessions
from herald.alerts.notify import deliver
from herald.alerts.rules import RuleSpec
from herald.api import create_app
from herald.models import AlertRule, Integration, Post, PostStatus, TokenRefreshAttempt
from herald.sandbox import SandboxClient, SandboxServer
from herald.security import outbound, signing
from herald.security.crypto import KeyRing
from herald.settings import AlertReceiver, Settings, use_settings
from herald.webhooks import subscriptions
from herald.webhooks.delivery import deliver_due
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh, ticking_until
from tests.fixtures.sandbox import issued_tokens
from tests.integration.alerts.conftest import Receiver
from tests.integration.api.conftest import bearer, member_headers, mint

MARKER = f"CANARY{uuid.uuid4().hex[:8]}-"
_LOGGERS = ("", "httpx", "httpcore", "celery", "celery.app.trace", "celery.worker.strategy")


@pytest.fixture
def every_level() -> Iterator[None]:
    """Log at DEBUG everywhere for the test (after the worker configured logging)."""
    previous = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def canary_settings(process_settings: Settings) -> Iterator[Settings]:
    """The process's settings with OAuth client secrets that carry the marker too."""
    settings = process_settings.model_copy(
        update={
            "provider_credentials": {
                name: {
                    "client_id": SecretStr(f"herald-{name}"),
                    "client_secret": SecretStr(f"{MARKER}client-secret-{name}"),
                }
                for name in process_settings.provider_credentials
            }
        }
    )
    use_settings(settings)
    yield settings
    use_settings(process_settings)


def _statuses(posts: list[Post]) -> list[PostStatus]:
    return [fresh(Post, p.id).status for p in posts]


def _refresh(celery_app: Celery, integration: Integration, done: Callable[[], bool]) -> None:
    celery_app.send_task("herald.tokens.refresh", kwargs={"integration_id": str(integration.id)})
    eventually(done, timeout=30, what=f"the refresh of {integration.provider}")


def _refresh_outcomes(integration: Integration) -> list[str | None]:
    with service_session() as s:
        return list(
            s.scalars(
                select(TokenRefreshAttempt.outcome)
                .where(TokenRefreshAttempt.integration_id == integration.id)
                .order_by(TokenRefreshAttempt.started_at)
            )
        )


def _every_row(engine: Engine) -> Iterator[tuple[str, str]]:
    """(table, row as text) for every row of every table the database has."""
    metadata = MetaData()
    metadata.reflect(bind=engine)
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                yield table.name, repr(tuple(row))


def test_no_token_reaches_a_log_line_a_span_or_a_row(
    canary_settings: Settings,
    worker: Any,
    celery_app: Celery,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
    spans: InMemorySpanExporter,
    log_lines: list[dict[str, Any]],
    committed: Engine,
    every_level: None,
    receiver: Receiver,
) -> None:
    telegram = connect("telegram", token_prefix=MARKER)
    discord = connect(
        "discord", token_prefix=MARKER, settings={"channel_id": "5001", "guild_id": "9001"}
    )
    threads = connect("threads", token_prefix=MARKER, handle="alice")
    mastodon = connect("mastodon", token_prefix=MARKER)
    rotating = connect("x", token_prefix=MARKER)
    refused = connect("x", token_prefix=MARKER)
    # An integrator's webhook whose signing secret carries the marker: its deliveries (signed
    # with it) must not leak it either.
    hooks = canary_settings.model_copy(update={"outbound_allow_hosts": ["127.0.0.1"]})
    keys = KeyRing.from_settings(hooks)
    hook_secret = f"{MARKER}{uuid.uuid4().hex}"
    with service_session() as s:
        subscriptions.create(
            s,
            telegram.workspace_id,
            url=f"{receiver.url}/hook",
            events=["post.published", "post.failed", "integration.needs_reauth"],
            keys=keys,
            settings=hooks,
            secret=hook_secret,
        )

    # Publishing: tokens in the path and the query; two networks quote the request back.
    sandbox.inject("threads", "error", status=400, echo=True, method="POST", times=1)
    sandbox.inject("mastodon", "error", status=422, echo=True, method="POST", times=1)
    posts = [
        new_post(telegram, content="canary via telegram"),
        new_post(discord, content="canary via discord"),
        new_post(threads, content="canary via threads, refused"),
        new_post(threads, content="canary via threads, published"),
        new_post(mastodon, content="canary via mastodon, refused"),
    ]
    eventually(
        ticking_until(
            celery_app,
            lambda: (
                sorted(_statuses(posts))
                == sorted([PostStatus.PUBLISHED] * 3 + [PostStatus.FAILED] * 2)
            ),
        ),
        timeout=30,
        what="three posts published and the two refused ones failed",
    )

    # A refresh refused for good, with the refresh token and client secret quoted back.
    sandbox.inject("x", "error", status=400, echo=True, path="oauth2/token", times=1)
    _refresh(celery_app, refused, lambda: _refresh_outcomes(refused) == ["invalid_grant"])
    # A refresh that fails once (retried by Celery, logged), then rotates both tokens.
    sandbox.inject("x", "error", status=503, echo=True, path="oauth2/token", times=1)
    _refresh(
        celery_app,
        rotating,
        lambda: fresh(Integration, rotating.id).token_version == rotating.token_version + 1,
    )
    assert _refresh_outcomes(rotating) == ["transient", "refreshed"]

    # The webhook deliveries, signed with the secret, to a real receiver.
    deliver_due(service_sessions("canary"), hooks, keys)
    assert len(receiver.accepted()) >= 6
    for request in receiver.requests:
        signing.verify(hook_secret, request.headers, request.body)

    # What a user reads back over the API.
    answers: list[str] = []
    with TestClient(create_app(canary_settings)) as client:
        # An account connected through the OAuth flow: X's code exchange with PKCE, the
        # client authenticating with its secret (the newest X account signs in at consent).
        headers = member_headers(refused.workspace_id)
        started = client.get(
            "/api/postiz/oauth/x/authorize",
            params={"workspace_id": str(refused.workspace_id)},
            headers=headers,
        )
        back = httpx.get(started.json()["url"], follow_redirects=False, timeout=30)
        redirect = parse_qs(urlsplit(back.headers["location"]).query)
        code = redirect["code"][0]
        connected = client.get(
            "/api/postiz/oauth/x/callback",
            params={"code": code, "state": redirect["state"][0]},
            headers=headers,
        )
        assert connected.status_code == 200, connected.text
        answers += [started.text, connected.text]
        for workspace_id in {p.workspace_id for p in posts}:
            headers = member_headers(workspace_id)
            answers.append(client.get("/api/postiz/posts", headers=headers).text)
            answers += [
                client.get(f"/api/postiz/posts/{p.id}", headers=headers).text
                for p in posts
                if p.workspace_id == workspace_id
            ]

    # An alert on the refresh failures, delivered to a real webhook receiver, and the audit
    # log as the service role reads it back.
    notifications = _alert_notifications(canary_settings)
    with TestClient(create_app(canary_settings)) as client:
        service = bearer(mint(sub=None, role="service_role"))
        answers.append(client.get("/api/postiz/audit", headers=service).text)

    # The secrets: the marker (every token issued, rotations included, and every client
    # secret starts with it), each token's random tail, and the Basic credentials.
    tokens = issued_tokens(sandbox_server)
    assert len(tokens) >= 9
    assert all(t.startswith(MARKER) for t in tokens)
    assert len(issued_tokens(sandbox_server, "x")) >= 5  # the exchange's pair among them
    secrets = [MARKER, code, *(t[-16:] for t in tokens)]
    for entry in canary_settings.provider_credentials.values():
        basic = (
            f"{entry['client_id'].get_secret_value()}:{entry['client_secret'].get_secret_value()}"
        )
        secrets.append(base64.b64encode(basic.encode()).decode())

    eventually(
        lambda: any(s.name == "run/herald.tokens.refresh" for s in spans.get_finished_spans()),
        what="the refresh spans",
    )
    places = [
        *((f"log line {line.get('event')!r}", json.dumps(line)) for line in log_lines),
        *((f"span {span.name!r}", span.to_json()) for span in spans.get_finished_spans()),
        *((f"row of {table}", row) for table, row in _every_row(db.get_service_engine())),
        *(("API answer", text) for text in answers),
        *(("alert notification", text) for text in notifications),
    ]
    searched = {where for where, _ in places}
    assert {"row of publish_attempts", "row of token_refresh_attempts", "span 'POST'"} <= searched
    assert {"row of audit_events", "row of audit_personal_data", "row of alert_notifications"} <= (
        searched
    )
    assert '"token.refresh.failed"' in answers[-1]
    assert {"row of webhook_subscriptions", "row of webhook_deliveries"} <= searched
    places += [("webhook request", f"{r.headers} {r.body!r}") for r in receiver.requests]
    for logger in ('"logger": "httpx"', '"logger": "httpcore.http11"', '"level": "debug"'):
        assert any(logger in text for _, text in places), logger
    # Database spans carry statements with placeholders, never bound values.
    db_spans = [s for s in spans.get_finished_spans() if "db.system" in (s.attributes or {})]
    assert db_spans
    assert [k for s in db_spans for k in s.attributes or {} if "param" in k] == []
    leaks = [(where, secret) for where, text in places for secret in secrets if secret in text]
    assert leaks == []


def _alert_notifications(settings: Settings) -> list[str]:
    """Make a rule on token refreshes fire and deliver it to a loopback webhook; the request
    bodies (and headers) it received."""
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.dumps(dict(self.headers.items())) + body.decode())
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        alerting = settings.model_copy(
            update={
                "alert_receivers": {
                    "hook": AlertReceiver.model_validate(
                        {
                            "type": "webhook",
                            "url": f"http://127.0.0.1:{port}",
                            "secret": f"{MARKER}webhook-secret",
                            "group_wait_s": 0,
                        }
                    )
                },
                "alert_default_receivers": ["hook"],
                "outbound_allow_hosts": ["127.0.0.1"],
            }
        )
        spec = RuleSpec.model_validate(
            {
                "name": "canary refreshes",
                "metric": "tokens.refresh_success_rate",
                "comparison": "<",
                "threshold": 1,
                "min_samples": 1,
                "severity": "critical",
                "group_by": ["provider"],
            }
        )
        with service_session() as session:
            session.add(AlertRule(workspace_id=None, **spec.row_values()))
        check_alerts(alerting)
        deliver(service_sessions("canary"), alerting)
        eventually(lambda: bool(received), timeout=30, what="the alert notification")
    finally:
        server.shutdown()
        server.server_close()
    return received


def test_a_secret_in_the_path_of_a_users_url_reaches_no_span(
    spans: InMemorySpanExporter, canary_settings: Settings
) -> None:
    """A Slack incoming webhook's URL is its secret (``/services/T…/B…/<secret>``), and an
    integrator's webhook path may be too: the outbound client's spans (alert receivers,
    webhook deliveries, media downloads) keep the URL's origin only."""

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = f"{MARKER}{uuid.uuid4().hex}"
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    allowed = canary_settings.model_copy(update={"outbound_allow_hosts": ["127.0.0.1"]})
    try:
        with outbound.client(allowed) as client:
            client.post(f"{origin}/services/T0001/B0002/{secret}?channel={secret}", content=b"{}")
    finally:
        server.shutdown()
        server.server_close()
    exported = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert exported, "the request made no client span"
    attributes = {k: v for s in exported for k, v in (s.attributes or {}).items() if "url" in k}
    assert attributes["url.full" if "url.full" in attributes else "http.url"].startswith(origin)
    assert [s.to_json() for s in exported if secret in s.to_json() or "B0002" in s.to_json()] == []
