"""Silences and inhibition: why a transition is held back, or needs no telling at all.

- A **silence** mutes the alerts whose labels match all of its matchers between ``starts_at``
  and ``ends_at``; a workspace's silence only ever mutes that workspace's alerts.
- **Inhibition**, as Alertmanager's inhibit rules: while a rule has a critical alert firing,
  the alerts of the rules it names in ``inhibits`` (below critical, same workspace) are muted.
  "Repeated token failures" firing mutes "Token refresh failures"; "Workers down" mutes
  "Queue not consumed".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from herald.alerts.matchers import MatcherSet
from herald.models import (
    Alert,
    AlertNotification,
    AlertRule,
    AlertStatus,
    NotificationStatus,
    Severity,
    Silence,
)

QUIET_KINDS = ("resolved", "acknowledged")


@dataclass(frozen=True, slots=True)
class ActiveSilence:
    id: uuid.UUID
    workspace_id: uuid.UUID | None
    matchers: MatcherSet

    def matches(self, alert: Alert) -> bool:
        if self.workspace_id is not None and alert.workspace_id != self.workspace_id:
            return False
        return self.matchers.matches(alert.labels)


@dataclass(frozen=True, slots=True)
class Muting:
    silences: tuple[ActiveSilence, ...]
    inhibitors: tuple[tuple[uuid.UUID | None, frozenset[str]], ...]

    @classmethod
    def load(cls, session: Session, now: datetime) -> Muting:
        silences = tuple(
            ActiveSilence(s.id, s.workspace_id, MatcherSet.parse(s.matchers))
            for s in session.scalars(
                select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)
            )
        )
        inhibitors = tuple(
            (workspace_id, frozenset(str(name) for name in inhibits))
            for workspace_id, inhibits in session.execute(
                select(Alert.workspace_id, AlertRule.inhibits)
                .join(AlertRule, AlertRule.id == Alert.rule_id)
                .where(
                    Alert.status.in_((AlertStatus.FIRING, AlertStatus.RECOVERING)),
                    Alert.severity == Severity.CRITICAL,
                )
            ).tuples()
            if inhibits
        )
        return cls(silences, inhibitors)

    def silenced_by(self, alert: Alert) -> list[uuid.UUID]:
        return [s.id for s in self.silences if s.matches(alert)]

    def inhibited(self, alert: Alert) -> bool:
        if alert.severity is Severity.CRITICAL:
            return False
        name = alert.labels.get("rule")
        return any(ws == alert.workspace_id and name in names for ws, names in self.inhibitors)

    def mutes(self, alert: Alert) -> bool:
        return self.inhibited(alert) or bool(self.silenced_by(alert))


#: A notice the receiver has had; one on its way (its delivery made, waiting to be tried
#: again after a failure).
SENT = AlertNotification.status == NotificationStatus.SENT
ON_ITS_WAY = (AlertNotification.status == NotificationStatus.PENDING) & (
    AlertNotification.delivery_id.is_not(None)
)


def told(session: Session, receiver: str, alert_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The alerts among ``alert_ids`` this receiver was told were firing (or without data)."""
    return _firing_notices(session, receiver, alert_ids, SENT)


def on_its_way(session: Session, receiver: str, alert_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The alerts among ``alert_ids`` whose firing (or no-data) notice to this receiver is on
    its way but not sent yet: its delivery made, waiting to be tried again after a failure. A
    resolve of such an alert is not needless (the firing will arrive), and it waits for it."""
    return _firing_notices(session, receiver, alert_ids, ON_ITS_WAY)


def _firing_notices(
    session: Session,
    receiver: str,
    alert_ids: Iterable[uuid.UUID],
    condition: ColumnElement[bool],
) -> set[uuid.UUID]:
    ids = set(alert_ids)
    if not ids:
        return set()
    return set(
        session.scalars(
            select(AlertNotification.alert_id)
            .where(
                AlertNotification.alert_id.in_(ids),
                AlertNotification.receiver == receiver,
                AlertNotification.kind.notin_(QUIET_KINDS),
                condition,
            )
            .distinct()
        )
    )


def needless(
    row: AlertNotification, alert: Alert, told: set[uuid.UUID], *, send_resolved: bool
) -> str | None:
    """Why this receiver need not hear ``row`` at all, or None when it must."""
    if row.delivery_id is not None:  # already on its way: finish it
        return None
    if row.kind in QUIET_KINDS:
        if row.kind == "resolved" and not send_resolved:
            return "the receiver does not take resolved notifications"
        if row.alert_id not in told:
            return "the receiver was never told this alert fired"
        return None
    if alert.status is AlertStatus.RESOLVED:
        return "resolved before it was sent"
    return None
