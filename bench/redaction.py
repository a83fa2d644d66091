"""``python -m bench.redaction``: what the one redaction costs where it runs on the hot path.

Per operation, in microseconds, measured in this run: a log line through the redaction
processor, a span through the redacting exporter (the mean of a database span, an HTTP span
and a task span: what a publish produces), and an error message bound to a ``RedactedText``
column. Log lines and spans are printed next to what the same line costs to render and the
same span costs to make, so the ratio is what to read on a busy machine.
"""

from __future__ import annotations

import itertools
import timeit
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.dialects import postgresql

from herald.models.base import RedactedText
from herald.telemetry.logging import redact
from herald.telemetry.spans import redact_span

LOG_LINE = {
    "post_id": "0f8e4c52-61a4-4b8e-9d1c-7a1f3f7f0e55",
    "provider": "mastodon",
    "attempt": 1,
    "outcome": "published",
    "status": "published",
    "error_code": None,
    "latency_ms": 41,
    "event": "publish.attempt",
    "task_id": "5c1c1c9e-1f5b-4a4e-8d55-0a8c1d3f9f0b",
    "task_name": "herald.posts.publish",
    "correlation_id": "req-7f3a",
    "causation_id": "a9e64d54-60a9-4ce7-bc3e-ac177f148695",
    "workspace_id": "e972fe9a-31f6-4560-a7ce-82a2c387fb84",
    "level": "info",
    "logger": "herald.publishing",
    "timestamp": "2026-11-27T17:52:32.394927Z",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "ea8344eae7dbc4e8",
}
ERROR_MESSAGE = "mastodon: Validation failed: Text character limit of 500 exceeded (HTTP 422)"


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    with tracer.start_as_current_span("run/herald.posts.publish") as span:
        span.set_attributes(
            {
                "celery.action": "run",
                "celery.task_name": "herald.posts.publish",
                "messaging.message.id": "5c1c1c9e-1f5b-4a4e-8d55-0a8c1d3f9f0b",
                "herald.correlation_id": "req-7f3a",
                "herald.workspace_id": "e972fe9a-31f6-4560-a7ce-82a2c387fb84",
            }
        )
    with tracer.start_as_current_span("UPDATE herald") as span:
        span.set_attributes(
            {
                "db.statement": "UPDATE integrations SET access_token_ciphertext="
                "%(access_token_ciphertext)s, token_version=%(token_version)s WHERE "
                "integrations.id = %(integrations_id)s::UUID",
                "db.system": "postgresql",
                "db.name": "herald",
                "net.peer.name": "127.0.0.1",
                "herald.correlation_id": "req-7f3a",
            }
        )
    with tracer.start_as_current_span("POST") as span:
        span.set_attributes(
            {
                "http.method": "POST",
                "http.url": "http://127.0.0.1:8765/mastodon/api/v1/statuses",
                "http.status_code": 200,
                "herald.correlation_id": "req-7f3a",
            }
        )
    return list(exporter.get_finished_spans())


def _per_op(work: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(work, number=number, repeat=5)) / number * 1e6


def _fresh_lines(count: int) -> Iterator[dict[str, object]]:
    """Log lines as production writes them: ids and timestamps differ on every line."""
    lines = []
    for _ in range(count):
        line: dict[str, object] = dict(LOG_LINE)
        for key in ("post_id", "task_id", "causation_id", "span_id"):
            line[key] = uuid.uuid4().hex
        line["timestamp"] = datetime.now(UTC).isoformat()
        lines.append(line)
    return itertools.cycle(lines)


def main() -> None:
    spans = _spans()
    column = RedactedText()
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    render = structlog.processors.JSONRenderer()
    tracer = TracerProvider().get_tracer("bench")
    lines = _fresh_lines(5_000)
    messages = itertools.cycle([f"{ERROR_MESSAGE} [{uuid.uuid4()}]" for _ in range(5_000)])

    def one_span() -> None:
        with tracer.start_as_current_span("POST") as span:
            span.set_attributes(dict(spans[2].attributes or {}))

    rows = [
        ("log line: redaction processor", lambda: redact(None, "", dict(next(lines)))),
        ("log line: JSON rendering (for scale)", lambda: render(None, "", dict(next(lines)))),
        ("span: redacted on export (mean of 3)", lambda: [redact_span(s) for s in spans]),
        ("span: made and ended (for scale)", one_span),
        (
            "error message bound to RedactedText",
            lambda: column.process_bind_param(next(messages), dialect),
        ),
    ]
    for name, work in rows:
        micros = _per_op(work) / (3 if "mean of 3" in name else 1)
        print(f"{name:40} {micros:8.2f} µs")


if __name__ == "__main__":
    main()
