"""Delivery of the outbox: Alertmanager's notification pipeline over what evaluation queued.

Evaluation decides states; this decides deliveries. Per (receiver, group), in one transaction
that holds the group's row locked (so two notifiers never send one group twice):

1. **suppress** — a transition of an alert that is silenced or inhibited waits (it goes out
   when the silence ends, if the alert still fires); a transition receivers need not hear (a
   resolve or acknowledgement of an alert this receiver was never told about, a resolve to a
   receiver with ``send_resolved`` off, a firing already resolved before it went out) is
   marked ``suppressed``. A resolve of an alert the receiver was told about always goes out,
   so no incident is left open behind a silence;
2. **group** — a new group waits ``group_wait``; a group that went out waits
   ``group_interval`` before the next change; an unchanged group with alerts still firing is
   sent again after ``repeat_interval``;
3. **send** — with tenacity's retries inside this run (``HERALD_ALERT_SEND_TRIES``) for
   failures worth retrying, then across runs with exponential backoff up to
   ``HERALD_ALERT_NOTIFY_MAX_ATTEMPTS``. The rows of one delivery share its id (the
   receiver's idempotency key) across every retry;
4. **record** — ``sent`` with the time, or the attempt count and a secret-free reason; a
   delivery that gives up is ``failed``, logged, and counted (``alerts.notification_failed``,
   which the default "Notification failures" rule reads).

A delivery is sent, then recorded: if the process dies between the two, the delivery is sent
again under the same id (at least once; PagerDuty dedups on ``dedup_key``, webhook receivers
on ``X-Herald-Delivery``).

One run starts no delivery past its budget (:func:`budget_s`: the task's soft time limit less
one delivery at its slowest): with receivers that hang, a run over many groups or many
per-alert deliveries would otherwise meet the soft time limit mid-group and roll back every
outcome of that group, and the next run would do the same. What is left waits, still pending,
for the next run (``deferred``); each run sends at least one delivery.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from herald.alerts import suppression
from herald.alerts.channels import Channel, Delivery, DeliveryFailed, channel_for
from herald.alerts.engine import SessionFactory
from herald.alerts.outbox import snapshot
from herald.models import (
    Alert,
    AlertNotification,
    AlertRule,
    AlertStatus,
    NotificationGroup,
    NotificationStatus,
    utcnow,
)
from herald.security import outbound
from herald.settings import AlertReceiver, Settings
from herald.telemetry import counters

log = structlog.get_logger("herald.alerts")

FAILED_COUNTER = "alerts.notification_failed"
ATTEMPT_FAILED_COUNTER = "alerts.notification_attempt_failed"
_MAX_SEND_WAIT_S = 10.0  # the longest wait between two tries of one delivery
STILL_FIRING = (AlertStatus.FIRING, AlertStatus.RECOVERING, AlertStatus.NO_DATA, AlertStatus.ERROR)


@dataclass
class NotifyReport:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    suppressed: int = 0
    waiting: int = 0
    #: Notifications, and groups not even looked at, left pending for the next run: this
    #: run's budget was spent.
    deferred: int = 0
    deferred_groups: int = 0
    #: Deliveries this run started (sent, failed or retrying).
    started: int = 0


def _candidates(session: Session, settings: Settings, now: datetime) -> list[tuple[str, str]]:
    """Groups with a transition due, and groups whose repeat interval has passed."""
    due = session.execute(
        select(AlertNotification.receiver, AlertNotification.group_key)
        .where(
            AlertNotification.status == NotificationStatus.PENDING,
            AlertNotification.next_attempt_at <= now,
        )
        .distinct()
    ).tuples()
    found = dict.fromkeys(due)
    for name, config in settings.alert_receivers.items():
        stale = session.scalars(
            select(NotificationGroup.group_key).where(
                NotificationGroup.receiver == name,
                NotificationGroup.last_sent_at <= now - timedelta(seconds=config.repeat_interval_s),
            )
        )
        found.update(dict.fromkeys((name, key) for key in stale))
    return list(found)


def _lock_group(session: Session, receiver: str, key: str) -> NotificationGroup | None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(NotificationGroup)
        .values(id=uuid.uuid4(), receiver=receiver, group_key=key)
        .on_conflict_do_nothing(index_elements=["receiver", "group_key"])
    )
    return session.scalars(
        select(NotificationGroup)
        .where(NotificationGroup.receiver == receiver, NotificationGroup.group_key == key)
        .with_for_update(skip_locked=True)
    ).first()


class GroupDelivery:
    """One pass of the pipeline over one locked (receiver, group)."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        http: httpx.Client,
        group: NotificationGroup,
        now: datetime,
        report: NotifyReport,
        deadline: float = float("inf"),
    ) -> None:
        self.session = session
        self.settings = settings
        self.http = http
        self.group = group
        self.now = now
        self.report = report
        self.deadline = deadline  # time.monotonic() past which no delivery starts

    def run(self) -> None:
        rows = self._due_rows()
        config = self.settings.alert_receivers.get(self.group.receiver)
        if config is None:
            self._give_up(rows, f"no receiver named {self.group.receiver!r} is configured")
            return
        rows = self._suppress(rows, config)
        in_flight = [row for row in rows if row.delivery_id is not None]
        fresh = [row for row in rows if row.delivery_id is None]
        channel = channel_for(config, self.settings, self.http)
        if in_flight:
            by_id: dict[uuid.UUID | None, list[AlertNotification]] = {}
            for row in in_flight:
                by_id.setdefault(row.delivery_id, []).append(row)
            for batch in by_id.values():
                if self._may_send(batch):
                    self._send(channel, config, batch)
            return
        if not fresh:
            fresh = self._repeats(config)
        elif not self._group_due(fresh, config):
            self.report.waiting += len(fresh)
            return
        batches = [[row] for row in fresh] if channel.per_alert else [fresh] if fresh else []
        for batch in batches:
            if not self._may_send(batch):
                continue
            delivery_id = uuid.uuid4()
            for row in batch:
                row.delivery_id = delivery_id
            self._send(channel, config, batch)
        if not batches and self._nothing_open():
            self.session.execute(
                delete(NotificationGroup).where(NotificationGroup.id == self.group.id)
            )

    def _may_send(self, batch: list[AlertNotification]) -> bool:
        """Whether this run may start ``batch``'s delivery (else it waits, still pending)."""
        if self.report.started and time.monotonic() >= self.deadline:
            self.report.deferred += len(batch)
            return False
        self.report.started += 1
        return True

    # -- stages ------------------------------------------------------------------------------------

    def _due_rows(self) -> list[AlertNotification]:
        return list(
            self.session.scalars(
                select(AlertNotification)
                .where(
                    AlertNotification.receiver == self.group.receiver,
                    AlertNotification.group_key == self.group.group_key,
                    AlertNotification.status == NotificationStatus.PENDING,
                    AlertNotification.next_attempt_at <= self.now,
                )
                .order_by(AlertNotification.next_attempt_at, AlertNotification.transition)
            )
        )

    def _suppress(
        self, rows: list[AlertNotification], config: AlertReceiver
    ) -> list[AlertNotification]:
        alerts = {
            a.id: a
            for a in self.session.scalars(
                select(Alert).where(Alert.id.in_({r.alert_id for r in rows}))
            )
        }
        muting = suppression.Muting.load(self.session, self.now)
        ids = [r.alert_id for r in rows]
        told = suppression.told(self.session, self.group.receiver, ids)
        coming = suppression.on_its_way(self.session, self.group.receiver, ids)
        keep = []
        for row in rows:
            alert = alerts[row.alert_id]
            quiet = row.kind in suppression.QUIET_KINDS
            if quiet and row.delivery_id is None and row.alert_id in coming:
                self.report.waiting += 1  # after the firing still being retried, never before
                continue
            reason = suppression.needless(row, alert, told, send_resolved=config.send_resolved)
            if reason is None and row.delivery_id is None and not quiet and muting.mutes(alert):
                self.report.waiting += 1
                continue
            if reason is not None:
                row.status = NotificationStatus.SUPPRESSED
                row.last_error = reason
                self.report.suppressed += 1
                continue
            if not quiet:
                told.add(row.alert_id)
            keep.append(row)
        return keep

    def _group_due(self, fresh: Sequence[AlertNotification], config: AlertReceiver) -> bool:
        last = self.group.last_sent_at
        if last is None:
            first = min(row.next_attempt_at for row in fresh)
            return first + timedelta(seconds=config.group_wait_s) <= self.now
        return last + timedelta(seconds=config.group_interval_s) <= self.now

    def _still_firing(self) -> list[Alert]:
        told = (
            select(AlertNotification.alert_id)
            .where(
                AlertNotification.receiver == self.group.receiver,
                AlertNotification.group_key == self.group.group_key,
                AlertNotification.status == NotificationStatus.SENT,
            )
            .distinct()
        )
        return list(
            self.session.scalars(
                select(Alert).where(Alert.id.in_(told), Alert.status.in_(STILL_FIRING))
            )
        )

    def _nothing_open(self) -> bool:
        return not self._still_firing()

    def _repeats(self, config: AlertReceiver) -> list[AlertNotification]:
        last = self.group.last_sent_at
        if last is None or last + timedelta(seconds=config.repeat_interval_s) > self.now:
            return []
        muting = suppression.Muting.load(self.session, self.now)
        rows = []
        for alert in self._still_firing():
            if muting.mutes(alert):
                continue
            rule = self.session.get(AlertRule, alert.rule_id)
            assert rule is not None
            payload = snapshot(alert, rule, "repeat", self.now)
            payload["status"] = "firing" if alert.status in STILL_FIRING[:2] else alert.status.value
            rows.append(
                AlertNotification(
                    alert_id=alert.id,
                    receiver=self.group.receiver,
                    transition=f"{alert.notify_seq}:repeat:{int(self.now.timestamp())}",
                    kind="repeat",
                    group_key=self.group.group_key,
                    payload=payload,
                    attempts=0,
                    next_attempt_at=self.now,
                )
            )
        self.session.add_all(rows)
        return rows

    def _send(self, channel: Channel, config: AlertReceiver, rows: list[AlertNotification]) -> None:
        delivery = Delivery(
            str(rows[0].delivery_id),
            self.group.receiver,
            self.group.group_key,
            [r.payload for r in rows],
        )
        settings = self.settings
        retrying = Retrying(
            stop=stop_after_attempt(settings.alert_send_tries),
            wait=wait_exponential(multiplier=settings.alert_send_backoff_s, max=_MAX_SEND_WAIT_S),
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryFailed) and e.retryable),
            reraise=True,
        )
        try:
            retrying(channel.send, delivery)
        except DeliveryFailed as exc:
            self._failed(rows, exc)
            return
        for row in rows:
            row.status = NotificationStatus.SENT
            row.sent_at = self.now
            row.attempts += 1
            row.last_error = None
        self.group.last_sent_at = self.now
        self.report.sent += len(rows)
        log.info(
            "alert.notification_sent",
            receiver=self.group.receiver,
            delivery_id=delivery.id,
            alerts=len(rows),
            status=delivery.status,
        )

    def _failed(self, rows: list[AlertNotification], exc: DeliveryFailed) -> None:
        settings = self.settings
        for row in rows:
            row.attempts += 1
            row.last_error = exc.reason
            counters.increment(self.session, ATTEMPT_FAILED_COUNTER, at=self.now)
        attempts = max(row.attempts for row in rows)
        if exc.retryable and attempts < settings.alert_notify_max_attempts:
            delay = min(
                settings.alert_notify_backoff_max_s,
                settings.alert_notify_backoff_s * 2 ** (attempts - 1),
            )
            for row in rows:
                row.next_attempt_at = self.now + timedelta(seconds=delay)
            self.report.retrying += len(rows)
            log.warning(
                "alert.notification_retrying",
                receiver=self.group.receiver,
                reason=exc.reason,
                attempts=attempts,
                retry_in_s=delay,
            )
            return
        self._give_up(rows, exc.reason)

    def _give_up(self, rows: list[AlertNotification], reason: str) -> None:
        for row in rows:
            row.status = NotificationStatus.FAILED
            row.last_error = reason
        if rows:
            counters.increment(self.session, FAILED_COUNTER, len(rows), at=self.now)
            self.report.failed += len(rows)
            log.error(
                "alert.notification_failed",
                receiver=self.group.receiver,
                reason=reason,
                alerts=len(rows),
            )


def budget_s(settings: Settings) -> float:
    """How long one run may go on starting deliveries: the task's soft time limit less one
    delivery at its slowest (every try at its channel's longest: the outbound timeout, or an
    e-mail's connect and exchange at the SMTP timeout each; every wait at its cap)."""
    tries = settings.alert_send_tries
    one_try = max(settings.outbound_timeout_s, 2 * settings.smtp_timeout_s)
    slowest = tries * one_try + (tries - 1) * _MAX_SEND_WAIT_S
    return max(0.0, settings.task_soft_time_limit_s - slowest - 5.0)


def deliver(
    sessions: SessionFactory,
    settings: Settings,
    *,
    now: datetime | None = None,
    resolver: outbound.Resolver | None = None,
    budget: float | None = None,
) -> NotifyReport:
    """Run the pipeline once over every group with something due, starting no delivery after
    ``budget`` seconds (:func:`budget_s` by default)."""
    deadline = time.monotonic() + (budget_s(settings) if budget is None else budget)
    now = now or utcnow()
    report = NotifyReport()
    with sessions() as session:
        candidates = _candidates(session, settings, now)
    if not candidates:
        return report
    with outbound.client(settings, resolver=resolver) as http:
        for receiver, key in candidates:
            if report.started and time.monotonic() >= deadline:
                report.deferred_groups += 1
                continue
            with sessions() as session:
                group = _lock_group(session, receiver, key)
                if group is not None:
                    GroupDelivery(
                        session,
                        settings=settings,
                        http=http,
                        group=group,
                        now=now,
                        report=report,
                        deadline=deadline,
                    ).run()
    return report
