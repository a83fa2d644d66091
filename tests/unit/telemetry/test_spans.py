"""What every span carries (the correlation id) and what no exported span carries (a secret),
on a private tracer provider with an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import Link, Status, StatusCode, Tracer

from herald.redaction import REDACTED
from herald.telemetry import context
from herald.telemetry.spans import (
    CorrelatedSampler,
    RedactingSpanExporter,
    redact_http_request,
    redact_span,
)

TOKEN = "tg-at-Zq9Sx1secretvalue"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider(sampler=CorrelatedSampler(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exported)))
    yield provider.get_tracer("test")
    provider.shutdown()


def test_every_secret_a_span_carries_is_redacted_on_export(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("other") as other:
        pass
    link = Link(other.get_span_context(), {"note": f"Bearer {TOKEN}"})
    with tracer.start_as_current_span(f"GET /bot{TOKEN}/getMe", links=[link]) as span:
        span.set_attribute("http.url", f"https://api.telegram.org/bot{TOKEN}/sendMessage")
        span.set_attribute("url.query", f"fields=id&access_token={TOKEN}")
        span.set_attribute("http.request.header.authorization", (f"Bearer {TOKEN}",))
        span.set_attribute("db.statement", "SELECT 1 WHERE token_version = %(v)s")
        span.add_event("retry", {"celery.retry.reason": f"refresh_token={TOKEN} refused"})
        span.record_exception(ValueError(f"answer quoted Authorization: Bearer {TOKEN}"))
        span.set_status(Status(StatusCode.ERROR, f'{{"access_token": "{TOKEN}"}}'))

    (out,) = [s for s in exported.get_finished_spans() if s.name != "other"]
    assert "Zq9Sx1" not in out.to_json()
    assert out.name == f"GET /bot{REDACTED}/getMe"
    attributes = dict(out.attributes or {})
    assert attributes["http.url"] == f"https://api.telegram.org/bot{REDACTED}/sendMessage"
    assert attributes["http.request.header.authorization"] == REDACTED
    assert attributes["db.statement"] == "SELECT 1 WHERE token_version = %(v)s"
    assert out.status.status_code is StatusCode.ERROR


def test_a_span_without_secrets_is_exported_as_it_is(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("run/herald.posts.publish") as span:
        span.set_attribute("db.statement", "UPDATE posts SET status=%(status)s")
        span.set_attribute("celery.timelimit", ["", "60"])
    (out,) = exported.get_finished_spans()
    assert redact_span(out) is out


def test_every_span_carries_the_correlation_of_the_work_that_made_it(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with (
        context.correlated("corr-span-1", workspace_id="ws-1"),
        tracer.start_as_current_span("outer"),
        tracer.start_as_current_span("SELECT"),
    ):
        pass
    with tracer.start_as_current_span("outside any work"):
        pass
    attributes = {s.name: dict(s.attributes or {}) for s in exported.get_finished_spans()}
    for name in ("outer", "SELECT"):
        assert attributes[name]["herald.correlation_id"] == "corr-span-1"
        assert attributes[name]["herald.workspace_id"] == "ws-1"
    assert "herald.correlation_id" not in attributes["outside any work"]


def test_the_httpx_hook_drops_path_secrets_and_the_query_at_the_source(tracer: Tracer) -> None:
    url = f"https://graph.threads.net/v1.0/me/threads?access_token={TOKEN}"
    with tracer.start_as_current_span(
        "POST", attributes={"http.url": url, "url.path": f"/bot{TOKEN}/x", "url.query": "a=1"}
    ) as span:
        redact_http_request(span, None)
        attributes = dict(span.attributes or {})  # type: ignore[attr-defined]
    assert attributes["http.url"] == "https://graph.threads.net/v1.0/me/threads"
    assert attributes["url.path"] == f"/bot{REDACTED}/x"
    assert attributes["url.query"] == REDACTED


def test_a_span_keeps_its_own_attributes_and_an_unsampled_one_records_nothing(
    exported: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=CorrelatedSampler(ALWAYS_OFF))
    with (
        context.correlated("corr-span-2", workspace_id="ws-2"),
        provider.get_tracer("test").start_as_current_span("dropped") as span,
    ):
        assert not span.is_recording()
    provider.shutdown()
    recorded = TracerProvider(sampler=CorrelatedSampler(ALWAYS_ON))
    recorded.add_span_processor(SimpleSpanProcessor(exported))
    with context.correlated("corr-span-3"):
        recorded.get_tracer("test").start_span("own", attributes={"a": 1}).end()
    recorded.shutdown()
    (out,) = exported.get_finished_spans()
    assert dict(out.attributes or {}) == {"a": 1, "herald.correlation_id": "corr-span-3"}


def test_a_text_seen_clean_under_one_key_is_still_redacted_under_a_secret_one(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    """What export remembers as checked is the key with its text, never the text alone."""
    for _ in range(2):  # the second time from what was remembered
        with tracer.start_as_current_span("clean") as span:
            span.set_attribute("note", "plain-words-0123456789")
    with tracer.start_as_current_span("secret") as span:
        span.set_attribute("client_secret", "plain-words-0123456789")
        span.set_attribute("note", f"Bearer {TOKEN}")
    spans = {s.name: dict(s.attributes or {}) for s in exported.get_finished_spans()}
    assert spans["clean"]["note"] == "plain-words-0123456789"
    assert spans["secret"]["client_secret"] == REDACTED
    assert TOKEN not in spans["secret"]["note"]
