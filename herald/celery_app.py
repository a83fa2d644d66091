"""The Celery app: queues, routes, defaults, and the signal wiring that carries correlation.

Defaults follow DESIGN.md §3: JSON only; late acks with reject-on-worker-lost so a crashed
worker's message is redelivered; prefetch 1 so a slow task does not hold others hostage; time
limits on every task; one queue per workload. What depends on the broker (exchange and routing
keys, Redis' visibility timeout, RabbitMQ's quorum queues, the guarded consumer and transport)
is :mod:`herald.broker.topology`'s.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from celery import Celery, signals
from celery.exceptions import CPendingDeprecationWarning
from kombu import Connection

import herald.broker.control  # noqa: F401 -- registers the guarded remote-control commands
from herald import db
from herald.beat_schedule import HEARTBEAT_TASK, beat_schedule
from herald.broker import topology
from herald.models import utcnow
from herald.providers.registry import provider_names
from herald.settings import Settings, get_settings
from herald.telemetry import context, metrics, prometheus, records
from herald.telemetry.figures import PUBLISH_OUTCOMES
from herald.telemetry.logging import configure_logging
from herald.telemetry.state import heartbeat_queues, job_intervals
from herald.telemetry.tracing import setup_telemetry, shutdown_telemetry
from herald.tokens.clients import check_at_start

QUEUES = ("default", "publish", "sweep", "tokens", "alerts")

ROUTES: dict[str, dict[str, str]] = {
    "herald.posts.publish": {"queue": "publish"},
    "herald.posts.publish_many": {"queue": "publish"},
    "herald.posts.record_outcome": {"queue": "publish"},
    "herald.posts.reconcile_lost": {"queue": "publish"},
    # Its lookups wait on the networks; on its own queue they never delay dispatch_due.
    "herald.posts.sweep_stuck": {"queue": "sweep"},
    # Long deletes in batches: kept off the queue dispatch_due ticks on.
    "herald.maintenance.*": {"queue": "sweep"},
    "herald.posts.*": {"queue": "default"},
    "herald.tokens.*": {"queue": "tokens"},
    "herald.alerts.*": {"queue": "alerts"},
    "herald.webhooks.*": {"queue": "alerts"},
    "herald.security.*": {"queue": "alerts"},
    "herald.audit.*": {"queue": "alerts"},
    "herald.analytics.*": {"queue": "default"},
}

TASK_MODULES = (
    "herald.tasks.publishing",
    "herald.tasks.tokens",
    "herald.tasks.monitoring",
    "herald.tasks.alerts",
    "herald.tasks.audit",
    "herald.tasks.maintenance",
    "herald.tasks.webhooks",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        **topology.broker_options(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_queues": topology.declare_queues(QUEUES, settings),
        "task_routes": ROUTES,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        # Events cost a Redis publish per task state; Flower turns them on while it watches.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings, QUEUES),
    }


def broker_connection(settings: Settings, *, timeout_s: int = 3) -> Connection:
    """A connection to the broker made like the workers' (same URL, same key prefix) with short
    timeouts: for probes (health, ``/readyz``, queue lengths), never for consuming."""
    options = celery_config(settings)["broker_transport_options"] | {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
    }
    return Connection(settings.broker_url, connect_timeout=timeout_s, transport_options=options)


def create_app(settings: Settings | None = None, *, set_as_current: bool = True) -> Celery:
    settings = settings or get_settings()
    celery = Celery("herald", set_as_current=set_as_current)
    celery.conf.update(celery_config(settings))
    celery.conf.include = list(TASK_MODULES)
    return celery


app = create_app()

# ----------------------------------------------------------------------------------------------
# Signal wiring: logging, per-process telemetry, and correlation across every hop.
# ----------------------------------------------------------------------------------------------


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers.
    configure_logging(get_settings())


@signals.worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    # A forked child must not share its parent's connections or exporter threads.
    db.dispose_engine()
    setup_telemetry(get_settings(), engines=db.engines())
    prometheus.pool_process_started()


@signals.beat_init.connect
def _record_jobs_expected(sender: Any = None, **_: Any) -> None:
    """Beat is up: from now on each of its periodic jobs is expected to run, and each queue it
    sends a heartbeat to to be consumed (health and the alert rules read both)."""
    conf = sender.app.conf if sender is not None and hasattr(sender, "app") else app.conf
    now = utcnow()
    records.record_jobs_expected(job_intervals(conf.beat_schedule), now)
    records.record_queues_expected(heartbeat_queues(conf.beat_schedule), now)


@signals.worker_ready.connect
def _zero_series(sender: Any = None, **_: Any) -> None:
    tasks = [name for name in app.tasks if name.startswith("herald.")]
    pairs = [(name, app.amqp.router.route({}, name)["queue"].name) for name in tasks]
    # The heartbeat is routed to every queue by beat, not by the routes.
    metrics.zero_task_series([*pairs, *((HEARTBEAT_TASK, queue) for queue in QUEUES)])
    metrics.zero_publish_series(provider_names(), PUBLISH_OUTCOMES)
    for reason in metrics.RESENT_REASONS:
        metrics.posts_resent.prime({"reason": reason})


@signals.worker_process_shutdown.connect
def _forget_pool_process(**_: Any) -> None:
    prometheus.pool_process_exited(os.getpid())


@signals.worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    # Solo and thread pools run tasks in this process, so telemetry starts here. A prefork
    # parent must not start it: its children would inherit exporter threads and locks across
    # fork; each child sets up its own in worker_process_init instead.
    if "prefork" in str(getattr(sender, "pool_cls", "")).lower():
        return
    setup_telemetry(get_settings(), engines=db.engines())


@signals.worker_init.connect
def _check_provider_clients(**_: Any) -> None:
    # Loud at start (any worker: CLI, embedded, tests): a provider in use without Herald's
    # OAuth client cannot refresh tokens.
    check_at_start(get_settings())


@signals.worker_ready.connect
def _quiet_the_connection_loss_reminder(**_: Any) -> None:
    # Herald sets worker_cancel_long_running_tasks_on_connection_loss deliberately (see
    # herald/broker/topology.py). Celery's reminder on every lost connection that its default
    # changes in 6.0 tells an operator nothing; Celery turns its warnings to "always" while
    # setting up logging, so the filter goes in once the worker is up.
    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_telemetry(**_: Any) -> None:
    shutdown_telemetry()


@signals.before_task_publish.connect
def _propagate_correlation(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp every outgoing message with the current correlation (chains, retries, send_task)."""
    if headers is None:
        return
    for key, value in context.outgoing_headers(headers.get("id")).items():
        # A caller (or another service) that set a header explicitly keeps its value.
        headers.setdefault(key, value)


@signals.before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the publication time (a retry is a new publication): queue wait starts here."""
    if headers is not None:
        headers[metrics.SENT_AT_HEADER] = time.time()


@signals.after_task_publish.connect
def _count_sent(
    headers: dict[str, Any] | None = None,
    routing_key: str | None = None,
    exchange: str | None = None,
    **_: Any,
) -> None:
    task = (headers or {}).get("task", "")
    queue = routing_key or exchange or ""
    metrics.task_events["sent"].add(1, {"task": task, "queue": queue})


@signals.task_received.connect
def _count_received(request: Any = None, **_: Any) -> None:
    labels = {"task": request.name, "queue": metrics.queue_of(request.delivery_info)}
    metrics.task_events["received"].add(1, labels)


@signals.task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = task.request if task is not None else None
    headers = {
        key: getattr(request, key, None)
        for key in (context.CORRELATION_HEADER, context.CAUSATION_HEADER, context.WORKSPACE_HEADER)
    }
    correlation_id, causation_id, workspace_id = context.incoming(headers, task_id)
    context.bind(
        correlation_id=correlation_id,
        causation_id=causation_id,
        workspace_id=workspace_id,
        task_id=task_id,
        task_name=getattr(task, "name", None),
    )


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    context.clear()
