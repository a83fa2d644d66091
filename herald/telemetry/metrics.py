"""Herald's metric instruments, defined once; each records to OpenTelemetry and Prometheus.

Call sites write ``metrics.publish_attempts.add(1, {"provider": …, "outcome": …})`` or
``metrics.publish_latency.record(seconds, {"provider": …})`` and the one call lands in two
places:

- OpenTelemetry, exported by OTLP when ``HERALD_OTLP_ENDPOINT`` is set (``telemetry/tracing.py``
  installs the meter provider): each instrument keeps its own figures by label values (a
  counter its totals, a histogram its bucket counts, sum, minimum and maximum) and
  OpenTelemetry reads them when it collects (an observable counter; a histogram added to what
  the reader receives, :func:`attach_histograms`);
- a prometheus_client metric in :data:`REGISTRY`. ``herald worker`` runs prometheus_client in
  multiprocess mode, so what its prefork children record adds up on its metrics port
  (``telemetry/prometheus.py``).

Names follow Prometheus' conventions and match on both paths: the OpenTelemetry instrument
``herald.tasks.sent`` is the Prometheus counter ``herald_tasks_sent_total`` and the histogram
``herald.task.runtime`` (unit ``s``) is ``herald_task_runtime_seconds``, which is also what
the collector's Prometheus exporter derives from the OTLP stream. Label names are fixed per
instrument; an attribute a call site leaves out is recorded as an empty label (in both, for
counters).

The cost per record is a dictionary lookup of the label values and two increments (measured
in docs/monitoring.md). Durable, windowed figures come from SQL instead (the attempt tables);
these instruments are for rates and latency distributions.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Histogram as _SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_meter = metrics.get_meter("herald")
# "on": off when the meter provider has no reader (nothing would ship it); "sdk_histograms":
# histograms record through the SDK (a reader wants them otherwise: attach_histograms).
_otel = {"on": True, "sdk_histograms": False}

# Counters' ``_created`` samples are one more series each and nothing here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: The registry of Herald's instruments in this process (a worker in multiprocess mode
#: serves its metric files instead; see ``telemetry/prometheus.py``).
REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

Attributes = Mapping[str, Any]

SENT_AT_HEADER = "x_sent_at"  # unix time at which a message was published (stamped by Herald)


def record_to_otel(enabled: bool) -> None:
    """Whether instruments also record to OpenTelemetry (``setup_telemetry`` decides: only
    when a metric reader, such as the OTLP exporter, will read them)."""
    _otel["on"] = enabled


def _prometheus_name(name: str) -> str:
    return name.replace(".", "_")


class _Instrument:
    """The Prometheus side: one child per label-value tuple, looked up without a lock."""

    __slots__ = ("_children", "_labels", "_prometheus", "name")

    def __init__(self, name: str, labels: tuple[str, ...], prometheus: Any) -> None:
        self.name = name
        self._labels = labels
        self._prometheus = prometheus
        self._children: dict[tuple[str, ...], Any] = {}

    def prime(self, attributes: Attributes) -> None:
        """Make the series of these labels exist (at 0) before anything is recorded."""
        self._child(attributes)

    def _key(self, attributes: Attributes) -> tuple[str, ...]:
        return tuple([str(attributes.get(label, "")) for label in self._labels])

    def _child(self, attributes: Attributes) -> Any:
        return self._child_of(self._key(attributes))

    def _child_of(self, key: tuple[str, ...]) -> Any:
        child = self._children.get(key)
        if child is None:  # a race here only makes the same child twice: labels() is locked
            child = self._children[key] = self._prometheus.labels(*key)
        return child


class Counter(_Instrument):
    """A monotonic count, kept in a Prometheus counter and observed by OpenTelemetry.

    OpenTelemetry reads the totals when it exports (an observable counter, cumulative like the
    synchronous one): recording each increment in its SDK as well cost about six times the
    Prometheus side on every call of the hot path (docs/performance.md, eleventh round).
    """

    __slots__ = ("_lock", "_totals")

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        prometheus = prometheus_client.Counter(
            _prometheus_name(name), description, labels, registry=REGISTRY
        )
        super().__init__(name, labels, prometheus)
        self._totals: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        _meter.create_observable_counter(name, [self._observe], description=description)

    def add(self, amount: float, attributes: Attributes) -> None:
        key = self._key(attributes)
        if _otel["on"]:
            with self._lock:
                self._totals[key] = self._totals.get(key, 0) + amount
        self._child_of(key).inc(amount)

    def prime(self, attributes: Attributes) -> None:
        key = self._key(attributes)
        with self._lock:
            self._totals.setdefault(key, 0)
        self._child_of(key)

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            totals = list(self._totals.items())
        return [
            Observation(total, dict(zip(self._labels, key, strict=True))) for key, total in totals
        ]


class _Series:
    """One label-value tuple's distribution, as OpenTelemetry's explicit-bucket histogram
    aggregates it: a count per bucket (``(bound[i-1], bound[i]]``, the last one open above),
    the count, sum, minimum and maximum, since ``start_ns``."""

    __slots__ = ("count", "counts", "max", "min", "start_ns", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = time.time_ns()


class Histogram(_Instrument):
    """A distribution in seconds, kept by label values and in a Prometheus histogram.

    OpenTelemetry reads the distributions when it collects (:func:`attach_histograms`), as it
    reads counters' totals: recording each value in its SDK as well cost about four times the
    rest of the call on every post of the hot path (docs/performance.md, sixteenth round).
    """

    __slots__ = ("_bounds", "_lock", "_sdk", "_series", "description")

    def __init__(
        self, name: str, description: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> None:
        prometheus = prometheus_client.Histogram(
            _prometheus_name(name) + "_seconds",
            description,
            labels,
            registry=REGISTRY,
            buckets=buckets,
        )
        super().__init__(name, labels, prometheus)
        self.description = description
        self._bounds = tuple(float(bound) for bound in buckets)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()
        # The SDK's own histogram, for a reader that cannot take Herald's (attach_histograms).
        self._sdk = _meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
        _HISTOGRAMS.append(self)

    def record(self, seconds: float, attributes: Attributes) -> None:
        key = self._key(attributes)
        # As the SDK's histogram: a value below zero or not finite is not a duration.
        if _otel["on"] and seconds >= 0 and math.isfinite(seconds):
            if _otel["sdk_histograms"]:
                self._sdk.record(seconds, dict(zip(self._labels, key, strict=True)))
            else:
                self._add(key, seconds)
        self._child_of(key).observe(seconds)

    def _add(self, key: tuple[str, ...], seconds: float) -> None:
        bucket = bisect_left(self._bounds, seconds)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self._bounds) + 1)
            series.counts[bucket] += 1
            series.count += 1
            series.sum += seconds
            series.min = min(series.min, seconds)
            series.max = max(series.max, seconds)

    def points(self, now_ns: int) -> list[HistogramDataPoint]:
        """Every label-value tuple's distribution so far (cumulative), as OpenTelemetry's
        histogram would have it."""
        with self._lock:
            series = [
                (key, s.start_ns, list(s.counts), s.count, s.sum, s.min, s.max)
                for key, s in self._series.items()
            ]
        return [
            HistogramDataPoint(
                attributes=dict(zip(self._labels, key, strict=True)),
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=count,
                sum=total,
                bucket_counts=counts,
                explicit_bounds=list(self._bounds),
                min=low,
                max=high,
                exemplars=[],
            )
            for key, start_ns, counts, count, total, low, high in series
        ]


#: Every Histogram made, in the order made (what :func:`attach_histograms` adds).
_HISTOGRAMS: list[Histogram] = []
_SCOPE = InstrumentationScope("herald")


def _with_histograms(data: MetricsData | None, resource: Resource) -> MetricsData | None:
    """``data`` with Herald's histograms in its ``herald`` scope, cumulative (``data`` made
    for them when the SDK collected nothing else)."""
    now_ns = time.time_ns()
    added = [
        Metric(
            name=histogram.name,
            description=histogram.description,
            unit="s",
            data=HistogramData(
                data_points=points,
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            ),
        )
        for histogram in _HISTOGRAMS
        if (points := histogram.points(now_ns))
    ]
    if not added:
        return data
    if data is None or not data.resource_metrics:
        data = MetricsData([ResourceMetrics(resource, [], "")])
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope in enumerate(scopes):
        if scope.scope.name == _SCOPE.name:
            scopes[index] = ScopeMetrics(scope.scope, [*scope.metrics, *added], scope.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(_SCOPE, added, ""))
    merged = ResourceMetrics(first.resource, scopes, first.schema_url)
    return MetricsData([merged, *rest])


def takes_herald_histograms(reader: MetricReader) -> bool:
    """Whether ``reader`` wants histograms as Herald keeps them: cumulative, in explicit
    buckets (the SDK's default). A reader preferring delta temporality (the OTLP exporter under
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta``) or another aggregation does
    not."""
    temporality = reader._instrument_class_temporality
    aggregation = reader._instrument_class_aggregation
    return all(
        temporality[kind] is AggregationTemporality.CUMULATIVE
        and isinstance(aggregation[kind], DefaultAggregation | ExplicitBucketHistogramAggregation)
        for kind in temporality
        if issubclass(kind, _SdkHistogram)
    )


def attach_histograms(readers: Sequence[MetricReader], resource: Resource) -> None:
    """Have every reader (registered on the meter provider) collect Herald's histograms with
    the SDK's own metrics, as if the SDK had aggregated them.

    The SDK offers no way to hand it a distribution aggregated elsewhere (no observable
    histogram, no metric producer in the Python SDK), so each reader's collection is wrapped:
    the one call through which every reader (OTLP's periodic exporter, the in-memory one of
    tests) gets what was collected. When a reader wants histograms otherwise
    (:func:`takes_herald_histograms`), none is wrapped and every histogram records through
    the SDK instead, as it did before Herald kept its own."""
    if not all(takes_herald_histograms(reader) for reader in readers):
        _otel["sdk_histograms"] = True
        return
    _otel["sdk_histograms"] = False
    for reader in readers:
        collect = reader._collect
        if collect is None:
            raise ValueError("attach_histograms: the reader is not registered on a provider")

        def with_histograms(
            reader: MetricReader, timeout_millis: float = 10_000, collect: Any = collect
        ) -> MetricsData | None:
            return _with_histograms(collect(reader, timeout_millis=timeout_millis), resource)

        reader._collect = with_histograms  # type: ignore[assignment]


# Bucket bounds, in seconds, for what each histogram measures.
_TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
_DELAY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

#: Task lifecycle events, as celery-exporter counts them: ``task_events["started"].add(…)``.
TASK_EVENTS = (
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "rejected",
    "revoked",
    "lost",  # the pool process running it died (herald.tasks.base.HeraldRequest)
)
task_events: dict[str, Counter] = {
    event: Counter(
        f"herald.tasks.{event}", f"Tasks {event}, by task name and queue.", ("task", "queue")
    )
    for event in TASK_EVENTS
}
task_runtime = Histogram(
    "herald.task.runtime",
    "Wall time of one task run, by task name and queue.",
    ("task", "queue"),
    _TASK_BUCKETS,
)
task_queue_wait = Histogram(
    "herald.task.queue_wait",
    "Time from a message's publication (or its ETA) to its task starting, by task and queue.",
    ("task", "queue"),
    _WAIT_BUCKETS,
)
provider_request_duration = Histogram(
    "herald.provider.request.duration",
    "Latency of one HTTP call to a provider, by provider, method and status.",
    ("provider", "method", "status"),
    _CALL_BUCKETS,
)
publish_attempts = Counter(
    "herald.publish.attempts",
    "Publish attempts by provider and outcome.",
    ("provider", "outcome"),
)
publish_latency = Histogram(
    "herald.publish.latency",
    "Provider latency of one publish attempt, by provider.",
    ("provider",),
    _CALL_BUCKETS,
)
publish_errors = Counter(
    "herald.publish.errors", "Publish errors by provider and error code.", ("provider", "code")
)
webhook_deliveries = Counter(
    "herald.webhook.deliveries",
    "Integrators' webhook delivery attempts by event and outcome (sent, retrying, failed).",
    ("event", "outcome"),
)
webhook_subscriptions_paused = Counter(
    "herald.webhook.subscriptions_paused",
    "Webhook subscriptions paused, by cause (kept_failing).",
    ("cause",),
)
token_refreshes = Counter(
    "herald.token.refreshes", "Token refreshes by provider and outcome.", ("provider", "outcome")
)
provider_configuration_errors = Counter(
    "herald.provider.configuration_errors",
    "Herald's own provider configuration refused or missing (OAuth client credentials), by "
    "provider and code: the operator's to fix, never the user's.",
    ("provider", "code"),
)
publish_lost_transitions = Counter(
    "herald.publish.lost_transitions",
    "Post status moves on the publish path whose conditional UPDATE matched no row (the post "
    "had moved on), by from, to and site. From 'publishing' means a run lost a post it owned: "
    "investigate.",
    ("from", "to", "site"),
)
provider_circuit_transitions = Counter(
    "herald.provider.circuit.transitions",
    "Per-provider circuit breaker moves, by provider and the state entered "
    "(open, half_open, closed).",
    ("provider", "state"),
)
audit_write_failures = Counter(
    "herald.audit.write_failures",
    "Audit events that could not be written (the operation went on), by event type.",
    ("event_type",),
)
sweep_resolutions = Counter(
    "herald.sweep.resolutions",
    "Posts stuck in publishing that the sweep handled, by provider and result.",
    ("provider", "result"),
)
posts_resent = Counter(
    "herald.posts.resent",
    "Queued posts whose publish message the sweep sent again, by why it was taken for lost: "
    "message_lost (queued past HERALD_QUEUED_TIMEOUT_S, or its send failed), never_sent (its "
    "dispatcher died between claim and send), broker_emptied (Redis lost what it held).",
    ("reason",),
)
RESENT_REASONS = ("message_lost", "never_sent", "broker_emptied")
service_scope_uses = Counter(
    "herald.service_scope.uses",
    "Task runs whose session was opened to every workspace (the service role), by task: a "
    "periodic job's use is counted here rather than written to the audit log per tick.",
    ("task",),
)
retention_purged = Counter(
    "herald.retention.purged",
    "History rows purged past the retention setting, by table.",
    ("table",),
)
publish_delay = Histogram(
    "herald.publish.delay",
    "Delay from a post's scheduled_at to its publication, by provider.",
    ("provider",),
    _DELAY_BUCKETS,
)


def zero_task_series(pairs: Iterable[tuple[str, str]]) -> None:
    """Create every task event series of these (task, queue) pairs at 0, as Prometheus advises:
    a series that exists before its first event makes that event visible to ``rate()``."""
    for task, queue in pairs:
        for counter in task_events.values():
            counter.prime({"task": task, "queue": queue})


def zero_publish_series(providers: Iterable[str], outcomes: Iterable[str]) -> None:
    """Create the attempt series of every provider and outcome at 0, for the same reason: the
    first post a worker publishes after it starts is then an increase, not a series born at 1
    that ``rate()`` and the failure-ratio alerts cannot see."""
    outcomes = tuple(outcomes)
    for provider in providers:
        for outcome in outcomes:
            publish_attempts.prime({"provider": provider, "outcome": outcome})


def observe_published(provider: str, scheduled_at: datetime, published_at: datetime) -> None:
    """Record how late a post went out (never below zero: a post can go out early by clocks)."""
    delay = (published_at - scheduled_at).total_seconds()
    publish_delay.record(max(0.0, delay), {"provider": provider})


def queue_of(delivery_info: Mapping[str, Any] | None) -> str:
    """The queue a message came from (Herald's queues route by their own name)."""
    if not delivery_info:
        return ""
    return str(delivery_info.get("routing_key") or delivery_info.get("exchange") or "")


def queue_wait_s(sent_at: object, eta: object = None, now: float | None = None) -> float | None:
    """Seconds a message waited before its task started: from the later of its publication
    (the :data:`SENT_AT_HEADER` stamp) and its ETA. None when the message carries no stamp."""
    try:
        start = float(sent_at)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if eta:
        try:
            when = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
            start = max(start, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
        except ValueError:
            pass
    return max(0.0, (time.time() if now is None else now) - start)
