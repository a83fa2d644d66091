"""One record, two destinations: Herald's instruments land in OpenTelemetry (exported by OTLP
when an endpoint is set) and in prometheus_client, under names that match."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest

from herald.telemetry import metrics
from tests.fixtures.monitoring import ROOT, OtlpSink, parse_exposition, total


def _otel_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_a_record_reaches_opentelemetry_and_prometheus_under_matching_names(
    telemetry: tuple[Any, InMemoryMetricReader],
) -> None:
    _, reader = telemetry
    labels = {"provider": "instrument-test", "outcome": "published"}
    before = total(
        parse_exposition(generate_latest(metrics.REGISTRY).decode()),
        "herald_publish_attempts_total",
        **labels,
    )
    metrics.publish_attempts.add(1, labels)
    metrics.publish_delay.record(12.5, {"provider": "instrument-test"})

    samples = parse_exposition(generate_latest(metrics.REGISTRY).decode())
    assert total(samples, "herald_publish_attempts_total", **labels) == before + 1
    assert total(samples, "herald_publish_delay_seconds_count", provider="instrument-test") >= 1
    assert (
        total(samples, "herald_publish_delay_seconds_bucket", provider="instrument-test", le="30.0")
        >= 1
    )
    points = _otel_points(reader, "herald.publish.attempts")
    assert any(dict(p.attributes) == labels for p in points)
    delays = _otel_points(reader, "herald.publish.delay")
    assert any(p.attributes.get("provider") == "instrument-test" for p in delays)


def test_a_counter_reads_the_same_in_opentelemetry_as_in_prometheus(
    telemetry: tuple[Any, InMemoryMetricReader],
) -> None:
    """Counters are observed by OpenTelemetry from their own totals: primed series at 0, every
    increment counted once, a label left out empty, as Prometheus has them."""
    _, reader = telemetry
    primed = {"provider": "observed-test", "outcome": "failed"}
    counted = {"provider": "observed-test", "outcome": "published"}
    metrics.publish_attempts.prime(primed)
    for _ in range(5):
        metrics.publish_attempts.add(1, counted)
    metrics.publish_attempts.add(2, {"provider": "observed-test"})  # no outcome

    def otel(labels: dict[str, str]) -> Any:
        (point,) = [
            p
            for p in _otel_points(reader, "herald.publish.attempts")
            if dict(p.attributes) == labels
        ]
        return point.value

    samples = parse_exposition(generate_latest(metrics.REGISTRY).decode())
    for labels in (primed, counted, {"provider": "observed-test", "outcome": ""}):
        assert otel(labels) == total(samples, "herald_publish_attempts_total", **labels)
    assert otel(counted) == 5
    assert isinstance(otel(counted), int)  # exported as an integer sum, as before


def test_queue_wait_starts_at_the_later_of_publication_and_eta() -> None:
    sent = 1_000.0
    assert metrics.queue_wait_s(sent, None, now=1_004.5) == 4.5
    eta = datetime.fromtimestamp(1_010.0, UTC).isoformat()
    assert metrics.queue_wait_s(sent, eta, now=1_012.0) == 2.0
    assert metrics.queue_wait_s(sent, None, now=990.0) == 0.0  # clocks of two hosts
    assert metrics.queue_wait_s(None) is None
    assert metrics.queue_wait_s("not a time") is None


def test_publish_delay_is_never_negative() -> None:
    now = datetime.now(UTC)
    before = total(
        parse_exposition(generate_latest(metrics.REGISTRY).decode()),
        "herald_publish_delay_seconds_bucket",
        provider="early-bird",
        le="0.5",
    )
    metrics.observe_published("early-bird", now + timedelta(seconds=3), now)
    after = total(
        parse_exposition(generate_latest(metrics.REGISTRY).decode()),
        "herald_publish_delay_seconds_bucket",
        provider="early-bird",
        le="0.5",
    )
    assert after == before + 1


_RECORD = """
from herald.settings import Settings
from herald.telemetry import metrics
from herald.telemetry.tracing import setup_telemetry, shutdown_telemetry
setup_telemetry(Settings())
metrics.publish_attempts.add(3, {"provider": "mastodon", "outcome": "published"})
metrics.task_runtime.record(0.25, {"task": "herald.posts.publish", "queue": "publish"})
shutdown_telemetry()
"""


def test_the_same_instruments_are_exported_by_otlp_when_an_endpoint_is_set(
    otlp_sink: OtlpSink,
) -> None:
    subprocess.run(
        [sys.executable, "-c", _RECORD],
        env={"HERALD_OTLP_ENDPOINT": otlp_sink.url, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    exported: dict[str, Any] = {}
    for body in otlp_sink.received("/v1/metrics"):
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    exported[metric.name] = metric
    attempts = exported["herald.publish.attempts"].sum.data_points
    assert [p.as_int for p in attempts] == [3]
    runtime = exported["herald.task.runtime"]
    assert runtime.unit == "s"
    assert runtime.histogram.data_points[0].count == 1
