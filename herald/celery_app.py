"""The Celery app: queues, routes, defaults, and the signal wiring that carries correlation.

Defaults follow DESIGN.md §3: JSON only; late acks with reject-on-worker-lost so a crashed
worker's message is redelivered; prefetch 1 so a slow task does not hold others hostage; time
limits on every task; a visibility timeout above the longest task so Redis does not redeliver
work still running; one queue per workload.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Queue

from herald import db
from herald.beat_schedule import beat_schedule
from herald.settings import Settings, get_settings
from herald.telemetry import context
from herald.telemetry.logging import configure_logging
from herald.telemetry.tracing import setup_telemetry, shutdown_telemetry

QUEUES = ("default", "publish", "tokens", "alerts")

ROUTES: dict[str, dict[str, str]] = {
    "herald.posts.publish": {"queue": "publish"},
    "herald.posts.*": {"queue": "default"},
    "herald.tokens.*": {"queue": "tokens"},
    "herald.alerts.*": {"queue": "alerts"},
    "herald.security.*": {"queue": "alerts"},
    "herald.audit.*": {"queue": "alerts"},
    "herald.analytics.*": {"queue": "default"},
}

TASK_MODULES = (
    "herald.tasks.publishing",
    "herald.tasks.tokens",
    "herald.tasks.alerts",
    "herald.tasks.audit",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_key_prefix:
        transport_options["global_keyprefix"] = settings.broker_key_prefix
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
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
        "task_default_queue": "default",
        "task_queues": [Queue(name) for name in QUEUES],
        "task_routes": ROUTES,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        # Events cost a Redis publish per task state; Flower turns them on while it watches.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings),
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("herald", set_as_current=True)
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
    setup_telemetry(get_settings(), engine=db.get_engine())


@signals.worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    # Solo and thread pools run tasks in this process, so telemetry starts here. A prefork
    # parent must not start it: its children would inherit exporter threads and locks across
    # fork; each child sets up its own in worker_process_init instead.
    if "prefork" in str(getattr(sender, "pool_cls", "")).lower():
        return
    setup_telemetry(get_settings(), engine=db.get_engine())


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


@signals.task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = task.request if task is not None else None
    headers = {
        key: getattr(request, key, None)
        for key in (context.CORRELATION_HEADER, context.CAUSATION_HEADER, context.WORKSPACE_HEADER)
    }
    correlation_id, causation_id, workspace_id = context.incoming(headers)
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
