"""OpenTelemetry instruments, defined once.

Workers record here; the OTLP exporter (when configured) ships them. Durable figures for the
monitoring API and ``/metrics`` are computed in SQL from the attempt tables instead, so they
survive restarts and need no multiprocess bookkeeping.
"""

from __future__ import annotations

from opentelemetry import metrics

_meter = metrics.get_meter("herald")

task_events = _meter.create_counter(
    "herald.task.events",
    description="Task lifecycle events by task name and event "
    "(started/succeeded/retried/failed/rejected).",
)
task_duration = _meter.create_histogram(
    "herald.task.duration", unit="s", description="Wall time of one task run."
)
provider_request_duration = _meter.create_histogram(
    "herald.provider.request.duration",
    unit="s",
    description="Latency of one HTTP call to a provider, by provider, method and status.",
)
publish_attempts = _meter.create_counter(
    "herald.publish.attempts", description="Publish attempts by provider and outcome."
)
publish_latency = _meter.create_histogram(
    "herald.publish.latency", unit="s", description="Provider latency of a publish attempt."
)
publish_errors = _meter.create_counter(
    "herald.publish.errors", description="Publish errors by provider and error code."
)
token_refreshes = _meter.create_counter(
    "herald.token.refreshes", description="Token refreshes by provider and outcome."
)
provider_configuration_errors = _meter.create_counter(
    "herald.provider.configuration_errors",
    description="Herald's own provider configuration refused or missing (OAuth client "
    "credentials), by provider and code: the operator's to fix, never the user's.",
)
publish_lost_transitions = _meter.create_counter(
    "herald.publish.lost_transitions",
    description="Post status moves on the publish path whose conditional UPDATE matched no row "
    "(the post had moved on), by from, to and site. From 'publishing' means a run lost a post "
    "it owned: investigate.",
)
provider_circuit_transitions = _meter.create_counter(
    "herald.provider.circuit.transitions",
    description="Per-provider circuit breaker moves, by provider and the state entered "
    "(open, half_open, closed).",
)
sweep_resolutions = _meter.create_counter(
    "herald.sweep.resolutions",
    description="Posts stuck in publishing that the sweep handled, by provider and result.",
)
