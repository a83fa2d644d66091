"""One trace per post: from the API request (or the enqueuing service) through every publish
attempt, on a real worker, the real broker and the sandbox; the dispatcher's tick is a link."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import select

from herald.api import create_app
from herald.models import Post, PostStatus, PublishAttempt, utcnow
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.telemetry.tracing import TraceContext, continued_trace, tracer
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh, ticking_until
from tests.integration.api.conftest import member_headers
from tests.integration.tokens.support import token_calls

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_post_scheduled_over_the_api_is_one_trace_through_a_retry_to_its_publish(
    connect: ConnectFn,
    sandbox: SandboxClient,
    process_settings: Settings,
    celery_app: Celery,
    worker: Any,
    spans: InMemorySpanExporter,
) -> None:
    # X has no idempotency key: a 503 to the publish is one failed attempt, not a retry
    # inside the call.
    integration = connect("x")
    sandbox.inject("x", "error", status=503, method="POST", path="tweets", times=1)
    with TestClient(create_app(process_settings)) as client:
        answer = client.post(
            "/api/postiz/posts",
            json={
                "integration_id": str(integration.id),
                "content": "one trace, two attempts",
                "scheduled_at": utcnow().isoformat(),
                "idempotency_key": "trace-1",
            },
            headers={
                **member_headers(integration.workspace_id),
                "traceparent": CALLER_TRACEPARENT,
                "X-Correlation-ID": "corr-trace-1",
            },
        )
    assert answer.status_code == 201, answer.text
    post_id = uuid.UUID(answer.json()["id"])

    eventually(
        ticking_until(celery_app, lambda: fresh(Post, post_id).status is PostStatus.PUBLISHED),
        timeout=30,
        what="the post to be published after one 503",
    )
    publish_runs = lambda: [  # noqa: E731 - read again while the last span finishes
        s for s in spans.get_finished_spans() if s.name == "run/herald.posts.publish"
    ]
    eventually(lambda: len(publish_runs()) == 2, what="both publish attempts' spans")

    finished = list(spans.get_finished_spans())
    flow = [s for s in finished if _trace_id(s) == CALLER_TRACE]
    names = [s.name for s in flow]
    # The caller's trace holds the request, the scheduling, each dispatch and each attempt.
    assert "POST /api/postiz/posts" in names
    assert "herald.schedule_post" in names
    assert names.count("herald.dispatch_post") == 2
    assert {_trace_id(s) for s in publish_runs()} == {CALLER_TRACE}
    for run in publish_runs():
        below = _children(flow, run)
        # Its statements (on the service engine) and its call to the network.
        assert any("db.statement" in (s.attributes or {}) for s in below), run
        assert any("/x/2/tweets" in str((s.attributes or {}).get("http.url")) for s in below), run
    # Statements make spans, pool checkouts do not (telemetry/tracing.py).
    assert "connect" not in names
    # Every span of the flow, database and HTTP spans included, carries the correlation id.
    assert {(s.attributes or {}).get("herald.correlation_id") for s in flow} == {"corr-trace-1"}

    # Each dispatch links the beat tick that found the post; no tick is the post's parent.
    ticks = {
        s.context.span_id: s
        for s in finished
        if s.name == "run/herald.posts.dispatch_due" and s.context is not None
    }
    for dispatch in (s for s in flow if s.name == "herald.dispatch_post"):
        (link,) = dispatch.links
        assert link.context.span_id in ticks
        assert format(link.context.trace_id, "032x") != CALLER_TRACE
    assert not [s for s in flow if s.name == "run/herald.posts.dispatch_due"]

    with service_session() as s:
        post = s.get(Post, post_id)
        assert post is not None
        assert post.traceparent is not None
        assert post.traceparent.split("-")[1] == CALLER_TRACE
        attempts = s.scalars(select(PublishAttempt).where(PublishAttempt.post_id == post_id))
        assert {(a.outcome, a.trace_id) for a in attempts} == {
            ("transient", CALLER_TRACE),
            ("published", CALLER_TRACE),
        }


def test_a_post_sent_by_another_service_continues_that_services_trace(
    connect: ConnectFn,
    process_settings: Settings,
    celery_app: Celery,
    worker: Any,
    spans: InMemorySpanExporter,
) -> None:
    integration = connect("mastodon")
    # What an instrumented producer elsewhere does: its span is current while it sends.
    token = otel_context.attach(propagate.extract({"traceparent": CALLER_TRACEPARENT}))
    try:
        celery_app.send_task(
            "herald.posts.schedule",
            kwargs={
                "workspace_id": str(integration.workspace_id),
                "integration_id": str(integration.id),
                "content": "scheduled by another service",
                "scheduled_at": utcnow().isoformat(),
                "idempotency_key": "svc-trace-1",
            },
        )
    finally:
        otel_context.detach(token)

    def stored() -> Post | None:
        with service_session() as s:
            return s.scalars(select(Post)).one_or_none()

    eventually(lambda: stored() is not None, what="the post to be stored")
    post = stored()
    assert post is not None
    assert post.traceparent is not None
    assert post.traceparent.split("-")[1] == CALLER_TRACE
    (schedule_span,) = [s for s in spans.get_finished_spans() if s.name == "herald.schedule_post"]
    assert _trace_id(schedule_span) == CALLER_TRACE


def _flow(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if _trace_id(s) == CALLER_TRACE]


def test_a_refresh_and_the_publish_after_it_stay_in_the_posts_trace(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    process_settings: Settings,
    celery_app: Celery,
    worker: Any,
    spans: InMemorySpanExporter,
) -> None:
    integration = connect("x")
    post = new_post(integration, traceparent=CALLER_TRACEPARENT, correlation_id="corr-refresh")
    sandbox.expire_tokens("x", integration.external_account_id)

    eventually(
        ticking_until(celery_app, lambda: fresh(Post, post.id).status is PostStatus.PUBLISHED),
        timeout=30,
        what="the post to be published after a refresh",
    )
    eventually(
        lambda: [s.name for s in _flow(spans)].count("run/herald.posts.publish") == 2,
        what="both publish attempts' spans",
    )
    flow = _flow(spans)
    assert [s.name for s in flow].count("run/herald.tokens.refresh") == 1  # one refresh
    assert len(token_calls(sandbox, "x")) == 1
    assert {(s.attributes or {}).get("herald.correlation_id") for s in flow} == {"corr-refresh"}


def test_the_sweeps_reconcile_of_a_post_is_part_of_the_posts_trace(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    pub_settings: Settings,
    keys: KeyRing,
    spans: InMemorySpanExporter,
) -> None:
    post = new_post(
        connect("mastodon"),
        status=PostStatus.PUBLISHING,
        publishing_started_at=utcnow() - timedelta(hours=1),
        traceparent=CALLER_TRACEPARENT,
        correlation_id="corr-reconcile",
    )
    with tracer.start_as_current_span("sweep tick") as tick, service_session() as s:
        assert resolve_dead_workers(s, pub_settings, keys) == {"retry": 1}

    flow = _flow(spans)
    (reconcile,) = [s for s in flow if s.name == "herald.reconcile_post"]
    assert [link.context.span_id for link in reconcile.links] == [tick.get_span_context().span_id]
    assert any("/mastodon/" in str((s.attributes or {}).get("http.url")) for s in flow)
    assert {(s.attributes or {}).get("herald.correlation_id") for s in flow} == {"corr-reconcile"}
    assert fresh(Post, post.id).status is PostStatus.RETRYING


def test_an_error_leaving_a_posts_span_is_recorded_on_it_and_ends_it(
    spans: InMemorySpanExporter,
) -> None:
    stored = TraceContext(CALLER_TRACEPARENT)

    def fail_in_the_posts_span() -> None:
        with continued_trace(stored, "herald.failing", {"n": 1}):
            raise RuntimeError("went wrong")

    with tracer.start_as_current_span("beat tick") as trigger:
        with pytest.raises(RuntimeError):
            fail_in_the_posts_span()
        assert trace.get_current_span() is trigger  # the post's span is no longer current
    (span,) = [s for s in spans.get_finished_spans() if s.name == "herald.failing"]
    assert _trace_id(span) == CALLER_TRACE
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert [link.context.span_id for link in span.links] == [trigger.get_span_context().span_id]
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert dict(span.attributes or {})["n"] == 1
