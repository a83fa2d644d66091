"""Every periodic job Celery beat runs, in one place.

Each entry names a public task (see the README's task table) and its cadence, read from the
settings. Beat only enqueues; the tasks are idempotent, so a tick that runs twice (two beats by
mistake, a redelivery) does no harm. Each tick expires after its interval: a backlog of stale
ticks is dropped rather than run in a burst.
"""

from __future__ import annotations

from typing import Any

from herald.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(seconds: float, task: str) -> dict[str, Any]:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}

    return {
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
    }
