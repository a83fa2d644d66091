"""One record, two destinations: Herald's instruments land in OpenTelemetry (exported by OTLP
when an endpoint is set) and in prometheus_client, under names that match."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
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
import sys
from herald.settings import Settings
from herald.telemetry import metrics
from herald.telemetry.tracing import setup_telemetry, shutdown_telemetry
setup_telemetry(Settings())
if sys.argv[1] == "both":
    metrics.publish_attempts.add(3, {"provider": "mastodon", "outcome": "published"})
metrics.task_runtime.record(0.25, {"task": "herald.posts.publish", "queue": "publish"})
metrics.task_runtime.record(float("nan"), {"task": "herald.posts.publish", "queue": "publish"})
shutdown_telemetry()
"""


@pytest.mark.parametrize(
    ("recorded", "temporality"),
    [("both", "cumulative"), ("histogram only", "cumulative"), ("both", "delta")],
)
def test_the_same_instruments_are_exported_by_otlp_when_an_endpoint_is_set(
    otlp_sink: OtlpSink, recorded: str, temporality: str
) -> None:
    """Herald's histograms go out with the SDK's metrics, alone when nothing else was recorded,
    and through the SDK's own histograms when the exporter prefers delta."""
    env = {"HERALD_OTLP_ENDPOINT": otlp_sink.url, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin"}
    env["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = temporality
    subprocess.run(
        [sys.executable, "-c", _RECORD, recorded], env=env, check=True, timeout=60, cwd=ROOT
    )
    exported: dict[str, list[Any]] = {}  # every export's metric of each name
    for body in otlp_sink.received("/v1/metrics"):
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    exported.setdefault(metric.name, []).append(metric)
    last = {name: metrics[-1] for name, metrics in exported.items()}
    delta = temporality == "delta"  # the exports add up; cumulative: the last holds all
    if recorded == "both":
        counts = [p.as_int for m in exported["herald.publish.attempts"] for p in m.sum.data_points]
        assert (sum(counts) if delta else counts[-1]) == 3
    runtime = last["herald.task.runtime"]
    assert runtime.unit == "s"
    points = [p for m in exported["herald.task.runtime"] for p in m.histogram.data_points]
    point = points[0]
    assert (point.count, point.sum) == (1, 0.25)  # the NaN left out, as the SDK does
    assert {a.key: a.value.string_value for a in point.attributes} == {
        "task": "herald.posts.publish",
        "queue": "publish",
    }
    expected = 1 if delta else 2  # AGGREGATION_TEMPORALITY_DELTA / CUMULATIVE
    assert runtime.histogram.aggregation_temporality == expected
    assert (sum(p.count for p in points) if delta else points[-1].count) == 1


def test_a_histogram_reads_as_the_sdk_would_have_aggregated_it(
    telemetry: tuple[Any, InMemoryMetricReader],
) -> None:
    """Histograms keep their own distributions, read by OpenTelemetry when it collects: the
    points equal what the SDK's explicit-bucket histogram makes of the same values (bucket
    edges included), and a label left out is empty, as Prometheus has it."""
    from opentelemetry.sdk.metrics import MeterProvider

    _, reader = telemetry
    sdk_reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[sdk_reader]).get_meter("compare")
    bounds = metrics._CALL_BUCKETS
    theirs = sdk.create_histogram("x", unit="s", explicit_bucket_boundaries_advisory=bounds)
    values = [0.0, 0.05, 0.0500001, 0.1, 2.5, 2.49, 59.9, 60.0, 61.0, 1e6, 0.3, 0.3]
    labels = {"provider": "histogram-test", "method": "POST", "status": "201"}
    for value in values:
        metrics.provider_request_duration.record(value, labels)
        theirs.record(value, labels)
    metrics.provider_request_duration.record(1.0, {"provider": "histogram-test"})

    ours = {
        tuple(sorted(p.attributes.items())): p
        for p in _otel_points(reader, "herald.provider.request.duration")
        if p.attributes.get("provider") == "histogram-test"
    }
    expected = _otel_points(sdk_reader, "x")[0]
    point = ours[tuple(sorted(labels.items()))]
    assert point.bucket_counts == list(expected.bucket_counts)
    assert list(point.explicit_bounds) == list(expected.explicit_bounds)
    assert (point.count, point.sum, point.min, point.max) == (
        expected.count,
        expected.sum,
        expected.min,
        expected.max,
    )
    left_out = ours[(("method", ""), ("provider", "histogram-test"), ("status", ""))]
    assert left_out.count == 1
    again = _otel_points(reader, "herald.provider.request.duration")  # cumulative
    assert any(dict(p.attributes) == labels and p.count == len(values) for p in again)
