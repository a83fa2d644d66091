"""No token reaches a log line, a span or a row: a canary run over real HTTP on a real worker.

Every token the sandbox issues in this test starts with a marker nobody else uses. Posts are
published where the token travels in the URL path (Telegram's bot token, a Discord webhook)
and in the query string (Threads); networks answer with error bodies that quote the request
back (its ``Authorization`` header, its query, its form with the refresh token); one refresh
fails for good, another fails, is retried and rotates both tokens. Then every captured log line
(every level, httpx's and httpcore's DEBUG lines included), every exported span (name,
attributes, events, links, status) and every column of every table in the database is searched
for the marker and for each token's random tail. Tables are found by reflecting the database,
so a table added later is searched too.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine

from herald import db
from herald.alerts.engine import service_sessions
from herald.api import create_app
from herald.models import Integration, Post, PostStatus, TokenRefreshAttempt
from herald.sandbox import SandboxClient, SandboxServer
from herald.security import signing
from herald.security.crypto import KeyRing
from herald.settings import Settings, use_settings
from herald.webhooks import subscriptions
from herald.webhooks.delivery import deliver_due
from tests.fixtures.publishing import ConnectFn, fresh, ticking_until
from tests.fixtures.sandbox import issued_tokens
from tests.integration.alerts.conftest import Receiver
from tests.integration.api.conftest import member_headers
from tests.integration.test_correlation_flow import wait_for

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
    wait_for(done, timeout=30, what=f"the refresh of {integration.provider}")


def _refresh_outcomes(integration: Integration) -> list[str | None]:
    with db.session_scope() as s:
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
    with db.session_scope() as s:
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
    wait_for(
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
        for workspace_id in {p.workspace_id for p in posts}:
            headers = member_headers(workspace_id)
            answers.append(client.get("/api/postiz/posts", headers=headers).text)
            answers += [
                client.get(f"/api/postiz/posts/{p.id}", headers=headers).text
                for p in posts
                if p.workspace_id == workspace_id
            ]

    # The secrets: the marker (every token issued, rotations included, and every client
    # secret starts with it), each token's random tail, and the Basic credentials.
    tokens = issued_tokens(sandbox_server)
    assert len(tokens) >= 9
    assert all(t.startswith(MARKER) for t in tokens)
    secrets = [MARKER, *(t[-16:] for t in tokens)]
    for entry in canary_settings.provider_credentials.values():
        basic = (
            f"{entry['client_id'].get_secret_value()}:{entry['client_secret'].get_secret_value()}"
        )
        secrets.append(base64.b64encode(basic.encode()).decode())

    wait_for(
        lambda: any(s.name == "run/herald.tokens.refresh" for s in spans.get_finished_spans()),
        what="the refresh spans",
    )
    places = [
        *((f"log line {line.get('event')!r}", json.dumps(line)) for line in log_lines),
        *((f"span {span.name!r}", span.to_json()) for span in spans.get_finished_spans()),
        *((f"row of {table}", row) for table, row in _every_row(committed)),
        *(("API answer", text) for text in answers),
    ]
    searched = {where for where, _ in places}
    assert {"row of publish_attempts", "row of token_refresh_attempts", "span 'POST'"} <= searched
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
