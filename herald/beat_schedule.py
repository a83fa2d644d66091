"""Every periodic job Celery beat runs, in one place.

Each entry names a public task (see the README's task table) and its cadence, read from the
settings. Beat only enqueues; the tasks are idempotent, so a tick that runs twice (two beats by
mistake, a redelivery) does no harm. Each tick expires after its interval: a backlog of stale
ticks is dropped rather than run in a burst.

Besides the jobs, beat sends ``herald.monitoring.heartbeat`` to every queue each
``HERALD_HEARTBEAT_INTERVAL_S``: the worker that consumes it records the round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from herald.settings import Settings

HEARTBEAT_TASK = "herald.monitoring.heartbeat"


def beat_schedule(settings: Settings, queues: Iterable[str]) -> dict[str, dict[str, Any]]:
    def every(seconds: float, task: str) -> dict[str, Any]:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}

    # One heartbeat per queue, routed to it explicitly: its round trip proves that someone
    # consumes that queue (recorded in ``heartbeats``; health and the alert rules read it).
    heartbeats = {
        f"heartbeat-{queue}": {
            "task": HEARTBEAT_TASK,
            "schedule": settings.heartbeat_interval_s,
            "kwargs": {"queue": queue},
            # Kept until it could no longer count as fresh: a backlog shorter than that does not
            # make a consumed queue look abandoned.
            "options": {"queue": queue, "expires": settings.heartbeat_max_age_s},
        }
        for queue in queues
    }
    return heartbeats | {
        "dispatch-due-posts": every(settings.dispatch_interval_s, "herald.posts.dispatch_due"),
        "sweep-stuck-posts": every(settings.sweep_interval_s, "herald.posts.sweep_stuck"),
        "refresh-expiring-tokens": every(
            settings.token_refresh_interval_s, "herald.tokens.refresh_expiring"
        ),
        "evaluate-alerts": every(settings.alert_evaluation_interval_s, "herald.alerts.evaluate"),
        "deliver-alert-notifications": every(
            settings.alert_notify_interval_s, "herald.alerts.notify"
        ),
        "verify-audit-chain": every(settings.audit_verify_interval_s, "herald.audit.verify_chain"),
        "detect-suspicious-activity": every(
            settings.suspicious_interval_s, "herald.security.detect_suspicious"
        ),
        "checkpoint-audit-chain": every(
            settings.audit_checkpoint_interval_s, "herald.audit.checkpoint"
        ),
        "purge-history": every(settings.retention_interval_s, "herald.maintenance.purge"),
        "deliver-webhooks": every(settings.webhook_deliver_interval_s, "herald.webhooks.deliver"),
    }
