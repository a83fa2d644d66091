"""OpenTelemetry tracing and metrics set-up.

Called once per process after any fork (Celery's ``worker_process_init``, the API's start-up,
the CLI's commands): the SDK's exporter threads do not survive ``fork``. Celery, SQLAlchemy
and httpx are instrumented, so one trace runs from an HTTP request or another service's
enqueue through every task hop to the provider's HTTP call.

Export goes by OTLP/HTTP when ``HERALD_OTLP_ENDPOINT`` is set, else to a JSON-lines file
(``HERALD_TRACE_FILE``) or the console (``HERALD_TRACE_CONSOLE``), else nowhere.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
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
from sqlalchemy.engine import Engine

from herald.settings import Settings
from herald.telemetry import metrics as instruments

_lock = threading.Lock()
_configured = False


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
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint), True
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
    engine: Engine | None = None,
    exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    component: str = "worker",
) -> None:
    """Install the tracer and meter providers and instrument libraries, once per process.

    ``exporter`` and ``metric_readers`` are for tests (in-memory) and override the settings.
    """
    global _configured  # noqa: PLW0603 - one set-up per process is the point
    if not settings.telemetry_enabled and exporter is None:
        return
    with _lock:
        if _configured:
            if engine is not None:
                instrument_engine(engine)
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
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(ratio)))
        chosen, batched = (exporter, False) if exporter is not None else _exporter(settings)
        if chosen is not None:
            processor: Any = BatchSpanProcessor(chosen) if batched else SimpleSpanProcessor(chosen)
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        readers = list(metric_readers) or _metric_readers(settings)
        # No exemplars: they cost a context lookup on every measurement of the hot path.
        metrics.set_meter_provider(
            MeterProvider(
                resource=resource,
                metric_readers=readers,
                exemplar_filter=AlwaysOffExemplarFilter(),
            )
        )
        instruments.record_to_otel(bool(readers))
        _instrument_libraries()
        if engine is not None:
            instrument_engine(engine)
        _configured = True


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()


_instrumented_engines: set[int] = set()


def instrument_engine(engine: Engine) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if id(engine) in _instrumented_engines:
        return
    SQLAlchemyInstrumentor().instrument(engine=engine, enable_commenter=False)
    _instrumented_engines.add(id(engine))


def shutdown_telemetry() -> None:
    """Flush what is buffered (called when a worker process or the CLI exits)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.force_flush()


tracer = trace.get_tracer("herald")
