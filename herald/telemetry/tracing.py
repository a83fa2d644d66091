"""OpenTelemetry tracing and metrics set-up, and the trace a post lives in.

Set-up is called once per process after any fork (Celery's ``worker_process_init``, the API's
start-up, the CLI's commands): the SDK's exporter threads do not survive ``fork``. Celery,
SQLAlchemy and httpx are instrumented (the latter two through the instrumentations' own code
with each statement's and each URL's description kept: :mod:`herald.telemetry.statements`,
:mod:`herald.telemetry.http_spans`); every span gets the correlation id when it starts and is
redacted on export (:mod:`herald.telemetry.spans`), whichever exporter is configured.

Export goes by OTLP/HTTP when ``HERALD_OTLP_ENDPOINT`` is set (the SDK's exporter with
Herald's encoder, :mod:`herald.telemetry.otlp`), else to a JSON-lines file
(``HERALD_TRACE_FILE``) or the console (``HERALD_TRACE_CONSOLE``), else nowhere.

One trace per post: :func:`current_trace_context` is what scheduling stores on the post (the
W3C ``traceparent``/``tracestate`` of the API request, or of the Celery message another
service sent, which the Celery instrumentation continues). :func:`continued_trace` runs later
work of that post (the dispatcher's send of each publish attempt, the sweep's reconcile) as a
span of the stored trace, with the span that found the work (a beat tick, which serves many
posts) as a link rather than the parent. Everything the publish task does then follows by
ordinary parenthood: the Celery instrumentation carries the context in the message headers.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from sqlalchemy.engine import Engine

from herald.settings import Settings
from herald.telemetry import context
from herald.telemetry import metrics as instruments
from herald.telemetry.spans import CorrelatedSampler, redact_http_request, redacting
from herald.telemetry.statements import trace_statements
from herald.telemetry.tracer import HeraldTracerProvider

_lock = threading.Lock()
_configured = False
_flush_timeout_s = 5.0  # HERALD_TELEMETRY_FLUSH_TIMEOUT_S, from set-up
_flushing: threading.Thread | None = None
_flush_ends = 0.0


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line: easy to grep, easy to load."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [span.to_json(indent=None) for span in spans]
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _exporter(settings: Settings) -> tuple[SpanExporter | None, bool]:
    """The configured exporter, and whether it should be batched."""
    if settings.otlp_endpoint:
        from herald.telemetry.otlp import OtlpSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        return OtlpSpanExporter(endpoint=endpoint, redact=True), True
    if settings.trace_file:
        return JsonLinesSpanExporter(settings.trace_file), True
    if settings.trace_console:
        return ConsoleSpanExporter(), False
    return None, False


def _metric_readers(settings: Settings) -> list[MetricReader]:
    if not settings.otlp_endpoint:
        return []
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/metrics"
    return [PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint))]


def setup_telemetry(
    settings: Settings,
    *,
    engines: Sequence[Engine] = (),
    exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    component: str = "worker",
) -> None:
    """Install the tracer and meter providers and instrument libraries, once per process.

    ``exporter`` and ``metric_readers`` are for tests (in-memory) and override the settings.
    """
    global _configured, _flush_timeout_s  # noqa: PLW0603 - one set-up per process is the point
    if not settings.telemetry_enabled and exporter is None:
        return
    with _lock:
        if _configured:
            instrument_engines(*engines)
            return
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.namespace": "herald",
                "herald.component": component,
                "deployment.environment": settings.env,
            }
        )
        # Parent-based: a trace started elsewhere keeps its decision across every hop.
        ratio = 1.0 if exporter is not None else settings.trace_sample_ratio
        # The SDK's own exit hooks flush for as long as the exporter retries (30-50 s against
        # a collector that is down or silent); Herald's hook below is bounded instead.
        provider = HeraldTracerProvider(
            resource=resource,
            sampler=CorrelatedSampler(ParentBased(TraceIdRatioBased(ratio))),
            shutdown_on_exit=False,
        )
        chosen, batched = (exporter, False) if exporter is not None else _exporter(settings)
        if chosen is not None:
            redacted = redacting(chosen)
            processor: Any = (
                BatchSpanProcessor(redacted) if batched else SimpleSpanProcessor(redacted)
            )
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        readers = list(metric_readers) or _metric_readers(settings)
        # No exemplars: they cost a context lookup on every measurement of the hot path.
        metrics.set_meter_provider(
            MeterProvider(
                resource=resource,
                metric_readers=readers,
                exemplar_filter=AlwaysOffExemplarFilter(),
                shutdown_on_exit=False,
            )
        )
        instruments.attach_histograms(readers, resource)
        instruments.record_to_otel(bool(readers))
        _instrument_libraries()
        instrument_engines(*engines)
        _flush_timeout_s = settings.telemetry_flush_timeout_s
        atexit.register(shutdown_telemetry)
        _configured = True


# The instrumentations make spans only. Their own metrics (Celery's task runtime, httpx's
# request duration, SQLAlchemy's pool usage) would repeat what Herald's instruments already
# count by task, provider and outcome (telemetry/metrics.py, the catalogue behind the
# dashboards and rules), at a cost on every task, request and checkout: docs/performance.md.
_NO_METRICS = NoOpMeterProvider()


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    from herald.telemetry.http_spans import HTTPSpans

    CeleryInstrumentor().instrument(meter_provider=_NO_METRICS)  # type: ignore[no-untyped-call]
    HTTPSpans().instrument(request_hook=redact_http_request, meter_provider=_NO_METRICS)


_instrumented_engines: list[Engine] = []


def instrument_engines(*engines: Engine) -> None:
    """Make a span of every statement each of ``engines`` runs (the runtime and the service
    engine: publishing runs on the latter), with the instrumentation's ``EngineTracer``
    describing each statement text once (:mod:`herald.telemetry.statements`)."""
    for engine in dict.fromkeys(engines):
        if all(engine is not done for done in _instrumented_engines):
            trace_statements(engine)
            _instrumented_engines.append(engine)


def shutdown_telemetry() -> None:
    """Send what is buffered, for at most ``HERALD_TELEMETRY_FLUSH_TIMEOUT_S`` (called when a
    worker process stops, and at exit). The SDK's flush ignores its own timeout and lasts as
    long as the exporter's retries, so it runs in a thread of its own that the stopping process
    waits for no longer than the bound; what it has not sent by then is lost, as a process
    killed then would lose it."""
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider())
    flushers = [p for p in providers if isinstance(p, TracerProvider | MeterProvider)]
    if not flushers:
        return

    def flush() -> None:
        for provider in flushers:
            provider.force_flush()

    global _flushing, _flush_ends  # noqa: PLW0603 - one flush at a time per process
    with _lock:
        if _flushing is None or not _flushing.is_alive():
            _flushing = threading.Thread(target=flush, name="herald-telemetry-flush", daemon=True)
            _flush_ends = time.monotonic() + _flush_timeout_s
            _flushing.start()
        # else a flush is under way (the worker's shutdown signal, then the exit hook): its
        # bound holds for both
        flushing, ends = _flushing, _flush_ends
    flushing.join(max(0.0, ends - time.monotonic()))


tracer = trace.get_tracer("herald")


# ----------------------------------------------------------------------------------------------
# One trace per post
# ----------------------------------------------------------------------------------------------

_W3C = TraceContextTextMapPropagator()
# W3C asks carriers to keep at least 512 characters of tracestate; a longer one is dropped
# whole (entries may be dropped, never cut).
TRACESTATE_MAX = 512


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context as stored on a post."""

    traceparent: str
    tracestate: str | None = None

    @classmethod
    def stored(cls, traceparent: str | None, tracestate: str | None) -> TraceContext | None:
        return cls(traceparent, tracestate) if traceparent else None


def trace_columns(context: TraceContext | None) -> dict[str, Any]:
    """The post's ``traceparent`` and ``tracestate`` column values for ``context``."""
    if context is None:
        return {"traceparent": None, "tracestate": None}
    return {"traceparent": context.traceparent, "tracestate": context.tracestate}


def current_trace_context() -> TraceContext | None:
    """The W3C context of the span running now (None when there is none to continue)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    traceparent = carrier.get("traceparent")
    if not traceparent:
        return None
    tracestate = carrier.get("tracestate") or None
    if tracestate is not None and len(tracestate) > TRACESTATE_MAX:
        tracestate = None
    return TraceContext(traceparent, tracestate)


@contextmanager
def continued_trace(
    stored: TraceContext | None, name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[trace.Span]:
    """Run the block as a span of ``stored``'s trace, linked to the span current now.

    The current span is what found the work (a beat tick or a sweep serving many posts): it
    becomes a link, not the parent. Without a stored context the block starts a trace of
    its own, still linked.
    """
    trigger = trace.get_current_span().get_span_context()
    links = [trace.Link(trigger)] if trigger.is_valid else []
    carrier: dict[str, str] = {}
    if stored is not None:
        carrier["traceparent"] = stored.traceparent
        if stored.tracestate:
            carrier["tracestate"] = stored.tracestate
    # An empty (or unreadable) carrier extracts to an empty context: a new trace, never the
    # trigger's.
    parent = _W3C.extract(carrier, context=Context())
    # What start_as_current_span does, without its two context-manager layers (the proxy
    # tracer's and the SDK's): started, made current, ended, an escaping error recorded.
    span = tracer.start_span(name, context=parent, links=links, attributes=attributes)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextmanager
def in_post_trace(
    name: str,
    *,
    post_id: str,
    correlation_id: str | None,
    workspace_id: str | None,
    stored: TraceContext | None,
) -> Iterator[trace.Span]:
    """Work on one post found by a job that serves many (the dispatcher, the sweep): under the
    post's correlation, as a span of the post's trace linked to the job's span."""
    with (
        context.acting_for(correlation_id, workspace_id),
        continued_trace(stored, name, {"herald.post_id": post_id}) as span,
    ):
        yield span
