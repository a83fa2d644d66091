"""Queue a transition for every receiver, in the transaction that decided it.

The outbox row is written with the state change it reports, so a transition is never lost
(the state commits with its rows) and never doubled (``transition`` is ``"<seq>:<kind>"``,
unique per alert and receiver, and ``seq`` moves only under the rule's lock). Each row carries
a snapshot of the alert as it was, and the group it belongs to for that receiver.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.alerts.rules import receivers_of
from herald.alerts.suppression import ON_ITS_WAY, QUIET_KINDS, SENT
from herald.models import Alert, AlertNotification, AlertRule, utcnow
from herald.settings import Settings

# Transitions every receiver hears; acknowledgements go only to channels that model them.
ACK_CHANNELS = frozenset({"webhook", "pagerduty"})


def group_key(labels: Mapping[str, Any], group_by: list[str]) -> str:
    """Alertmanager's group key: the grouping labels and their values, in a stable order."""
    pairs = ",".join(f'{name}="{labels.get(name, "")}"' for name in sorted(group_by))
    return "{" + pairs + "}"


def snapshot(alert: Alert, rule: AlertRule, kind: str, now: datetime) -> dict[str, Any]:
    """What receivers are told about ``alert`` at this transition."""
    ends = alert.resolved_at if kind == "resolved" else None
    return {
        "alert_id": str(alert.id),
        "fingerprint": alert.fingerprint,
        "rule": rule.name,
        "rule_id": str(rule.id),
        "status": kind,
        "state": alert.status.value,
        "severity": alert.severity.value,
        "labels": dict(alert.labels),
        "annotations": {
            "summary": alert.summary,
            "description": rule.description,
            "runbook": rule.runbook,
        },
        "value": alert.value,
        "workspace_id": str(alert.workspace_id) if alert.workspace_id else None,
        "starts_at": (alert.fired_at or alert.pending_since).isoformat(),
        "ends_at": ends.isoformat() if ends else None,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "ack_note": alert.ack_note,
        "at": now.isoformat(),
    }


def _told_of(session: Session, alert: Alert) -> list[str]:
    """The receivers told this alert fired, or being told so (its delivery on its way)."""
    return sorted(
        set(
            session.scalars(
                select(AlertNotification.receiver).where(
                    AlertNotification.alert_id == alert.id,
                    AlertNotification.kind.notin_(QUIET_KINDS),
                    SENT | ON_ITS_WAY,
                )
            )
        )
    )


def enqueue(
    session: Session,
    alert: Alert,
    rule: AlertRule,
    kind: str,
    settings: Settings,
    *,
    now: datetime | None = None,
) -> list[AlertNotification]:
    """Bump the alert's sequence and queue ``kind`` for each of the rule's receivers, and a
    resolve or an acknowledgement also for every receiver told this alert fired (or being told
    so), whether or not it is still one of the rule's."""
    now = now or utcnow()
    alert.notify_seq = (alert.notify_seq or 0) + 1
    names = list(receivers_of(rule, settings))
    if kind in QUIET_KINDS:
        names += [name for name in _told_of(session, alert) if name not in names]
    rows = []
    for name in names:
        receiver = settings.alert_receivers.get(name)
        if kind == "acknowledged" and (receiver is None or receiver.type not in ACK_CHANNELS):
            continue
        grouping = receiver.group_by if receiver is not None else ["rule"]
        rows.append(
            AlertNotification(
                alert_id=alert.id,
                receiver=name,
                transition=f"{alert.notify_seq}:{kind}",
                kind=kind,
                group_key=group_key(alert.labels, grouping),
                payload=snapshot(alert, rule, kind, now),
                attempts=0,
                next_attempt_at=now,
            )
        )
    session.add_all(rows)
    return rows
