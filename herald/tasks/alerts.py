"""Alert tasks: thin Celery bindings of :mod:`herald.alerts`.

| task                     | queue  | payload     |
| ------------------------ | ------ | ----------- |
| ``herald.alerts.evaluate`` | alerts | none (beat) |
| ``herald.alerts.notify``   | alerts | none (beat) |

``evaluate`` runs every ``HERALD_ALERT_EVALUATION_INTERVAL_S`` and, when a transition was
queued, asks ``notify`` to run at once (it also runs every ``HERALD_ALERT_NOTIFY_INTERVAL_S``
for group waits, retries and repeats). Both take their own transactions per rule and per
group, so neither holds a lock for longer than one rule or one delivery.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from herald.alerts.engine import check_alerts, service_sessions
from herald.alerts.notify import deliver
from herald.celery_app import app
from herald.contracts import NoArguments
from herald.settings import get_settings
from herald.tasks.base import HeraldTask, RetryPolicy

DB_BLIPS = RetryPolicy(retry_on=(OperationalError,), max_retries=3, backoff_s=2.0)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.alerts.evaluate",
    scope="service",
    payload_model=NoArguments,
    retry_policy=DB_BLIPS,
    periodic=True,
)
def evaluate(self: HeraldTask, payload: NoArguments) -> dict[str, Any]:
    outcomes = check_alerts(get_settings())
    transitions = sum(len(outcome.transitions) for outcome in outcomes)
    if transitions:
        self.enqueue(app.signature("herald.alerts.notify", kwargs={}))
    return {"rules": len(outcomes), "transitions": transitions}


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.alerts.notify",
    scope="service",
    payload_model=NoArguments,
    retry_policy=DB_BLIPS,
    periodic=True,
)
def notify(self: HeraldTask, payload: NoArguments) -> dict[str, int]:
    report = deliver(service_sessions("alerts.notify"), get_settings())
    return dict(vars(report))
