"""``/metrics`` of ``herald api``: the database's and the broker's state as Prometheus gauges.

:class:`StateCollector` is a prometheus_client collector; each scrape reads the state afresh
(:mod:`herald.telemetry.state`, :mod:`herald.telemetry.broker`), so there is nothing to keep
in sync and two API replicas answer alike. Series that describe a fixed set (statuses, queues,
alert states by severities) are always present, at 0 when empty, so a query over them returns
data from the first scrape. A database or broker that does not answer turns its ``_up`` gauge
to 0 and leaves its series out; the scrape itself still succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from herald.telemetry.broker import BrokerProbe
from herald.telemetry.state import Reading, State, sorted_queues


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _database(state: State) -> Iterator[Metric]:
    posts = _gauge(
        "herald_posts",
        "Posts by status: open statuses in full; published, failed and cancelled only for "
        "posts scheduled within HERALD_METRICS_FINISHED_WINDOW_S.",
        ["status"],
    )
    for status, count in state.posts.items():
        posts.add_metric([status.value], count)
    yield posts
    yield GaugeMetricFamily(
        "herald_posts_due_unqueued",
        "Posts whose time has come that the dispatcher has not queued yet.",
        value=state.due_unqueued,
    )
    yield GaugeMetricFamily(
        "herald_posts_oldest_due_age_seconds",
        "How long the oldest due, unqueued post has waited (0 when none).",
        value=state.oldest_due_age_s,
    )
    yield GaugeMetricFamily(
        "herald_workers_seen",
        "Distinct workers that consumed a heartbeat within HERALD_HEARTBEAT_MAX_AGE_S.",
        value=state.workers_seen,
    )
    alerts = _gauge("herald_alerts", "Open alerts by state and severity.", ["state", "severity"])
    for (alert_state, severity), count in state.alerts.items():
        alerts.add_metric([alert_state.value, severity.value], count)
    yield alerts
    if state.audit is not None:
        yield GaugeMetricFamily(
            "herald_audit_chain_last_verified_timestamp_seconds",
            "When the audit hash chain was last verified (unix time).",
            value=state.audit.verified_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "herald_audit_chain_ok",
            "1 when the last verification found the audit chain intact, else 0.",
            value=1 if state.audit.ok else 0,
        )


def _heartbeats(state: State, queues: Sequence[str]) -> Iterator[Metric]:
    age = _gauge(
        "herald_queue_heartbeat_age_seconds",
        "Time since a worker last consumed the heartbeat on this queue (+Inf: never).",
        ["queue"],
    )
    round_trip = _gauge(
        "herald_queue_heartbeat_round_trip_seconds",
        "From beat's send to the worker's start, for the last heartbeat on this queue.",
        ["queue"],
    )
    for queue in sorted_queues(queues, state):
        beat = state.heartbeats.get(queue)
        age.add_metric([queue], beat.age_s if beat else math.inf)
        if beat is not None:
            round_trip.add_metric([queue], beat.round_trip_s)
    yield age
    yield round_trip


def _jobs(state: State, jobs: Sequence[str]) -> Iterator[Metric]:
    # Labelled "task", not "job": Prometheus gives every series the scrape job's "job" label
    # and would rename an exposed one to "exported_job", out of reach of queries.
    last = _gauge(
        "herald_periodic_job_last_success_timestamp_seconds",
        "When each periodic job (named by its task) last succeeded (unix time; 0: never).",
        ["task"],
    )
    for job in sorted({*jobs, *state.jobs}):
        run = state.jobs.get(job)
        succeeded = run.last_succeeded_at if run is not None else None
        last.add_metric([job], succeeded.timestamp() if succeeded else 0.0)
    yield last


def _broker(broker: BrokerProbe) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "herald_broker_up", "1 when the broker answered this scrape.", value=int(broker.reachable)
    )
    if broker.reachable:
        lengths = _gauge("herald_queue_length", "Messages waiting in each broker queue.", ["queue"])
        for queue, length in broker.queue_lengths.items():
            lengths.add_metric([queue], length)
        yield lengths


class StateCollector(Collector):
    """Renders one :class:`Reading` per scrape."""

    def __init__(
        self, read: Callable[[], Reading], *, queues: Sequence[str], jobs: Sequence[str]
    ) -> None:
        self._read = read
        self._queues = tuple(queues)
        self._jobs = tuple(jobs)

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        state = reading.state
        yield GaugeMetricFamily(
            "herald_database_up",
            "1 when the database answered this scrape.",
            value=int(state is not None),
        )
        yield from _broker(reading.broker)
        if state is not None:
            yield from _database(state)
            yield from _heartbeats(state, self._queues)
            yield from _jobs(state, self._jobs)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no reading at registration: series are known only at scrape time
