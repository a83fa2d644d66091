"""Webhook task: deliver the integrators' webhook outbox (:mod:`herald.webhooks.delivery`).

| task                        | queue  | payload     |
| --------------------------- | ------ | ----------- |
| ``herald.webhooks.deliver`` | alerts | none (beat) |
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from herald.alerts.engine import service_sessions
from herald.celery_app import app
from herald.contracts import NoArguments
from herald.security.crypto import KeyRing
from herald.settings import get_settings
from herald.tasks.base import HeraldTask, RetryPolicy
from herald.webhooks.delivery import deliver_due


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.webhooks.deliver",
    payload_model=NoArguments,
    retry_policy=RetryPolicy(retry_on=(OperationalError,), max_retries=3, backoff_s=2.0),
    periodic=True,
    scope="service",
)
def deliver(self: HeraldTask, payload: NoArguments) -> dict[str, int]:
    settings = get_settings()
    report = deliver_due(
        service_sessions("webhooks.deliver"), settings, KeyRing.from_settings(settings)
    )
    return dict(vars(report))
