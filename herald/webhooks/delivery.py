"""Deliver the webhook outbox: each due delivery in a transaction of its own that holds its row
(``FOR UPDATE SKIP LOCKED``, so two deliverers never send one delivery at once), signed, sent
through the outbound client that refuses private addresses, and recorded.

- 2xx: ``sent``; the subscription's run of failures ends.
- anything else (an HTTP error, a refused destination, a connection error): the attempt is
  counted with a secret-free reason and tried again after an exponential backoff, up to
  ``HERALD_WEBHOOK_MAX_ATTEMPTS``, then ``failed``.
- a subscription whose last ``HERALD_WEBHOOK_PAUSE_AFTER`` attempts all failed is *paused*:
  nothing more is queued or sent for it until it is resumed. That is reported three ways: an
  ERROR log line, the ``herald.webhooks.subscriptions_paused`` metric, and the
  ``webhooks.subscription_paused`` event counter, which the default rule "Webhook subscriptions
  paused" reads.

A delivery is sent, then recorded: if the process dies in between, it is sent again under the
same id (at least once; receivers drop repeats by ``X-Herald-Delivery``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from herald.models import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from herald.security import outbound, signing
from herald.security.crypto import DecryptionError, KeyRing
from herald.settings import Settings
from herald.telemetry import counters, metrics
from herald.webhooks.subscriptions import binding

log = structlog.get_logger("herald.webhooks")
PAUSED_COUNTER = "webhooks.subscription_paused"
PAUSED_ERROR = "the subscription is paused"
SessionFactory = Callable[[], AbstractContextManager[Session]]
_rng = random.Random()  # noqa: S311 - jitter


@dataclass
class Report:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    paused: int = 0
    #: Due deliveries left for the next run because this one's budget was spent.
    deferred: int = 0


def budget_s(settings: Settings) -> float:
    """How long one run may go on starting deliveries: the task's soft time limit less one
    delivery at its slowest (the outbound client's deadline, redirects included) and a margin.
    Past the limit a delivery would be sent and never recorded, then sent again."""
    return max(0.0, settings.task_soft_time_limit_s - settings.outbound_timeout_s - 5.0)


def deliver_due(
    sessions: SessionFactory,
    settings: Settings,
    keys: KeyRing,
    *,
    http: httpx.Client | None = None,
    now: datetime | None = None,
    budget: float | None = None,
) -> Report:
    """Deliver every delivery that is due (at most ``HERALD_WEBHOOK_BATCH`` per run), starting
    none but the first once ``budget`` seconds have passed (:func:`budget_s` by default): the
    rest wait for the next run."""
    report = Report()
    deadline = time.monotonic() + (budget_s(settings) if budget is None else budget)
    client = http or outbound.client(settings)
    try:
        for started in range(settings.webhook_batch):
            with sessions() as session:
                # One at least, whatever the budget: a budget of nothing (a soft time limit
                # set shorter than the outbound timeout) must not stop every delivery.
                if started and time.monotonic() >= deadline:
                    report.deferred = _due_count(session, now or utcnow())
                    break
                if not _deliver_one(
                    session, settings, keys, client, now=now or utcnow(), report=report
                ):
                    break
    finally:
        if http is None:
            client.close()
    if report.deferred:
        log.info("webhook.run_budget_spent", deferred=report.deferred)
    return report


def _due_count(session: Session, now: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
        )
        or 0
    )


def _deliver_one(
    session: Session,
    settings: Settings,
    keys: KeyRing,
    client: httpx.Client,
    *,
    now: datetime,
    report: Report,
) -> bool:
    row = session.execute(
        select(WebhookDelivery, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).first()
    if row is None:
        return False
    delivery, subscription = row[0], row[1]
    if subscription.status is SubscriptionStatus.PAUSED:
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = PAUSED_ERROR
        report.failed += 1
        return True
    status, error = _send(delivery, subscription, keys, client)
    delivery.attempts += 1
    delivery.last_status_code = status
    labels = {"event": delivery.event}
    if error is None:
        delivery.status = DeliveryStatus.SENT
        delivery.sent_at = utcnow()
        delivery.last_error = None
        _count_failures(session, subscription, reset=True)
        report.sent += 1
        metrics.webhook_deliveries.add(1, {**labels, "outcome": "sent"})
        log.info(
            "webhook.sent",
            delivery_id=str(delivery.id),
            webhook_event=delivery.event,
            status=status,
        )
        return True
    delivery.last_error = error
    failures = _count_failures(session, subscription)
    if subscription.status is SubscriptionStatus.PAUSED:  # by another deliverer meanwhile
        delivery.status = DeliveryStatus.FAILED
        report.failed += 1
        metrics.webhook_deliveries.add(1, {**labels, "outcome": "failed"})
        return True
    if delivery.attempts >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED
        report.failed += 1
        outcome = "failed"
    else:
        delivery.next_attempt_at = now + _backoff(delivery.attempts, settings)
        report.retrying += 1
        outcome = "retrying"
    metrics.webhook_deliveries.add(1, {**labels, "outcome": outcome})
    log.warning(
        "webhook.failed",
        delivery_id=str(delivery.id),
        subscription_id=str(subscription.id),
        webhook_event=delivery.event,
        attempt=delivery.attempts,
        reason=error,
        outcome=outcome,
    )
    if failures >= settings.webhook_pause_after and _pause(
        session, subscription, delivery, failures=failures, reason=error, now=now
    ):
        report.paused += 1
    return True


def _count_failures(
    session: Session, subscription: WebhookSubscription, *, reset: bool = False
) -> int:
    """Add one to the subscription's run of failures (or end it) in the database itself:
    deliverers of one subscription run at once, and each holds only its delivery's row."""
    column = WebhookSubscription.consecutive_failures
    count, status = session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription.id)
        .values(consecutive_failures=0 if reset else column + 1)
        .returning(column, WebhookSubscription.status)
        .execution_options(synchronize_session=False)
    ).one()
    set_committed_value(subscription, "consecutive_failures", count)
    set_committed_value(subscription, "status", status)
    return int(count)


def _send(
    delivery: WebhookDelivery,
    subscription: WebhookSubscription,
    keys: KeyRing,
    client: httpx.Client,
) -> tuple[int | None, str | None]:
    """POST the signed body; the HTTP status and a secret-free reason when it failed."""
    try:
        secret = keys.open(
            subscription.secret_ciphertext, binding(subscription.id, subscription.workspace_id)
        )
    except DecryptionError:
        return None, "the subscription's secret cannot be opened (key ring changed?)"
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Herald-Event": delivery.event,
        **signing.sign(secret, str(delivery.id), body),
    }
    try:
        # Only the status counts: the receiver's body is never read (it could be endless).
        with client.stream("POST", subscription.url, content=body, headers=headers) as response:
            status = response.status_code
    except outbound.DestinationRefused as exc:
        said = exc.reason
        return None, said if said.startswith(
            "refused destination"
        ) else f"refused destination: {said}"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__} while sending"
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


def _backoff(attempts: int, settings: Settings) -> timedelta:
    ceiling = min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempts - 1))
    return timedelta(seconds=_rng.uniform(ceiling / 2, ceiling))


def _pause(
    session: Session,
    subscription: WebhookSubscription,
    delivery: WebhookDelivery,
    *,
    failures: int,
    reason: str,
    now: datetime,
) -> bool:
    """Pause the subscription (once, whoever else saw it fail) and fail its pending deliveries,
    ``delivery`` (which just failed) among them: a resume starts from new events. Whether this
    call paused it."""
    result = session.execute(
        update(WebhookSubscription)
        .where(
            WebhookSubscription.id == subscription.id,
            WebhookSubscription.status == SubscriptionStatus.ACTIVE,
        )
        .values(
            status=SubscriptionStatus.PAUSED,
            paused_at=now,
            paused_reason=f"{failures} failures in a row: {reason}",
        )
        .execution_options(synchronize_session=False)
    )
    if not (isinstance(result, CursorResult) and result.rowcount == 1):
        return False
    delivery.status = DeliveryStatus.FAILED  # keeps its own error
    # The others not being sent right now: a deliverer holding one fails it itself when it
    # sees the pause (waiting for its row here while it waits for the subscription's row this
    # transaction holds would be a deadlock).
    idle = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.subscription_id == subscription.id,
            WebhookDelivery.id != delivery.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .with_for_update(skip_locked=True)
    )
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(idle.scalar_subquery()))
        .values(status=DeliveryStatus.FAILED, last_error=PAUSED_ERROR)
        .execution_options(synchronize_session=False)
    )
    counters.increment(session, PAUSED_COUNTER, workspace_id=subscription.workspace_id)
    metrics.webhook_subscriptions_paused.add(1, {"cause": "kept_failing"})
    log.error(
        "webhook.subscription_paused",
        subscription_id=str(subscription.id),
        workspace_id=str(subscription.workspace_id),
        failures=failures,
        reason=reason,
    )
    return True
