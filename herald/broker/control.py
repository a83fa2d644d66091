"""Remote-control commands Herald narrows: what Flower's worker page and ``celery control``
may change in a running worker without breaking Herald's timing relations.

``time_limit`` (Flower's "Task limits", ``celery control time_limit <task> <soft> [hard]``)
sets a task's soft and hard time limits in the running workers. Herald's settings are checked
at start so that no combination can publish a post twice or strand it
(:func:`herald.settings.timing_problems`: the sweep reconciles a post ``publishing`` for longer
than ``HERALD_PUBLISHING_TIMEOUT_S`` because no run can last that long; the soft limit must
leave room for one provider call). A limit changed at run time is held to the same relations:
the command is refused, naming the relation, when the limits asked for break one, and passed
to Celery's own handler otherwise. A limit of 0 or none means the configured one, as it does
to Celery. (A producer's ``timelimit`` header is ignored instead: ``inspection.py``.)
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from celery.worker import control as celery_control

from herald.settings import get_settings, timing_problems

log = structlog.get_logger("herald.broker")

# Celery's own handler (the type stubs leave the command functions out).
_celery_time_limit = celery_control.time_limit  # type: ignore[attr-defined]


@celery_control.control_command(
    args=[("task_name", str), ("soft", float), ("hard", float)],
    signature="<task_name> <soft_secs> [hard_secs]",
)
def time_limit(
    state: Any,
    task_name: str | None = None,
    hard: float | None = None,
    soft: float | None = None,
    **kwargs: Any,
) -> dict[str, str]:
    """Celery's ``time_limit``, refused when the limits would break a timing relation."""
    for name, value in (("soft", soft), ("hard", hard)):
        if value is not None and not _seconds(value):
            return {"error": f"time limits refused: {name} must be seconds, not {value!r:.40}"}
    settings = get_settings()
    asked = settings.model_copy(
        update={
            "task_time_limit_s": hard or settings.task_time_limit_s,
            "task_soft_time_limit_s": soft or settings.task_soft_time_limit_s,
        }
    )
    problems = timing_problems(asked)
    if problems:
        reason = "; ".join(problems)
        log.warning(
            "control.time_limit_refused", task=task_name, soft=soft, hard=hard, reason=reason
        )
        return {"error": f"time limits refused: {reason}"}  # Celery's nok()
    accepted: dict[str, str] = _celery_time_limit(
        state, task_name=task_name, hard=hard, soft=soft, **kwargs
    )
    return accepted


def _seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
