"""What people do with alerts, for the API and the CLI alike: list, acknowledge, count, and
manage rules and silences — each within a :class:`Scope` (one workspace, or all of them).

Errors::

    AlertsError
    ├── NotFound     404: no such alert, rule or silence in this scope
    └── Conflict     409: a rule of that name exists; a builtin rule cannot be deleted
    RuleInvalid      422 (herald.alerts.rules): the definition is wrong, field by field
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald.alerts import outbox, rules
from herald.alerts.matchers import MatcherSpec
from herald.alerts.suppression import Muting
from herald.models import Alert, AlertRule, AlertStatus, Severity, Silence, utcnow
from herald.models.alert import OPEN_ALERT_STATUSES
from herald.security import audit
from herald.security.audit import Actor, EventType
from herald.settings import Settings
from herald.telemetry.figures import seconds_between

T = TypeVar("T", bound=tuple[Any, ...])


class AlertsError(Exception):
    status = 400
    code = "alerts_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(AlertsError):
    status = 404
    code = "not_found"


class Conflict(AlertsError):
    status = 409
    code = "conflict"


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose alerts: one workspace's, or (``workspace_id`` None) every workspace's."""

    workspace_id: uuid.UUID | None

    def filter(self, stmt: Select[T], column: Any) -> Select[T]:
        return stmt if self.workspace_id is None else stmt.where(column == self.workspace_id)


ALL = Scope(None)


@dataclass(frozen=True, slots=True)
class AlertView:
    alert: Alert
    rule: str
    silenced_by: list[uuid.UUID]
    inhibited: bool


def list_alerts(
    session: Session,
    scope: Scope,
    *,
    severity: Sequence[Severity] = (),
    state: Sequence[AlertStatus] = (),
    limit: int = 100,
    now: datetime | None = None,
) -> list[AlertView]:
    """Alerts newest first; open ones only unless ``state`` names others."""
    stmt = scope.filter(
        select(Alert, AlertRule.name).join(AlertRule, AlertRule.id == Alert.rule_id),
        Alert.workspace_id,
    )
    stmt = stmt.where(Alert.status.in_(state or OPEN_ALERT_STATUSES))
    if severity:
        stmt = stmt.where(Alert.severity.in_(severity))
    rows = session.execute(stmt.order_by(Alert.pending_since.desc()).limit(limit)).tuples().all()
    muting = Muting.load(session, now or utcnow())
    return [
        AlertView(alert, name, muting.silenced_by(alert), muting.inhibited(alert))
        for alert, name in rows
    ]


def get_alert(session: Session, scope: Scope, alert_id: uuid.UUID, *, lock: bool = False) -> Alert:
    stmt = scope.filter(select(Alert).where(Alert.id == alert_id), Alert.workspace_id)
    alert = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if alert is None:
        raise NotFound("no such alert")
    return alert


def acknowledge(
    session: Session,
    scope: Scope,
    alert_id: uuid.UUID,
    *,
    actor: Actor,
    note: str,
    settings: Settings,
    now: datetime | None = None,
) -> Alert:
    """Record who acknowledged an open alert, and tell the receivers that model it.

    Idempotent: acknowledging an acknowledged alert changes nothing. The acknowledgement
    belongs to this occurrence; when it resolves, the next occurrence starts unacknowledged.
    """
    now = now or utcnow()
    alert = get_alert(session, scope, alert_id, lock=True)
    if alert.status not in OPEN_ALERT_STATUSES:
        raise Conflict("the alert is resolved: there is nothing to acknowledge")
    if alert.acknowledged_at is not None:
        return alert
    alert.acknowledged_by = actor.id or actor.type
    alert.acknowledged_at = now
    alert.ack_note = note
    rule = session.get(AlertRule, alert.rule_id)
    assert rule is not None
    if alert.notify_seq:
        outbox.enqueue(session, alert, rule, "acknowledged", settings, now=now)
    audit.record(
        session,
        EventType.ALERT_ACKNOWLEDGED,
        actor=actor,
        action="alert.acknowledge",
        workspace_id=alert.workspace_id,
        resource_type="alert",
        resource_id=str(alert.id),
        message=f"alert of rule {rule.name!r} acknowledged",
        details={"note": note[:500]},
    )
    session.flush()
    return alert


def stats(
    session: Session, scope: Scope, *, since: datetime, now: datetime | None = None
) -> dict[str, Any]:
    """Open alerts by severity and state; mean times to acknowledge and to resolve of the
    alerts that fired since ``since``."""
    now = now or utcnow()
    open_rows = session.execute(
        scope.filter(
            select(Alert.severity, Alert.status, func.count()).where(
                Alert.status.in_(OPEN_ALERT_STATUSES)
            ),
            Alert.workspace_id,
        ).group_by(Alert.severity, Alert.status)
    ).all()
    by_severity = {s.value: 0 for s in Severity}
    by_state = {s.value: 0 for s in OPEN_ALERT_STATUSES}
    for sev, status, count in open_rows:
        by_severity[sev.value] += count
        by_state[status.value] += count
    fired = scope.filter(
        select(
            func.avg(seconds_between(Alert.acknowledged_at, Alert.fired_at)),
            func.count(Alert.acknowledged_at),
            func.avg(seconds_between(Alert.resolved_at, Alert.fired_at)),
            func.count(Alert.resolved_at),
        ).where(Alert.fired_at >= since, Alert.fired_at < now),
        Alert.workspace_id,
    )
    mtta, acked, mttr, resolved = session.execute(fired).one()
    return {
        "open_total": sum(by_severity.values()),
        "open_by_severity": by_severity,
        "open_by_state": by_state,
        "since": since,
        "acknowledged": int(acked or 0),
        "mean_time_to_acknowledge_s": float(mtta) if mtta is not None else None,
        "resolved": int(resolved or 0),
        "mean_time_to_resolve_s": float(mttr) if mttr is not None else None,
    }


# -- rules --------------------------------------------------------------------------------


def list_rules(session: Session, scope: Scope) -> list[AlertRule]:
    stmt = scope.filter(select(AlertRule), AlertRule.workspace_id)
    return list(session.scalars(stmt.order_by(AlertRule.workspace_id, AlertRule.name)))


def get_rule(session: Session, scope: Scope, rule_id: uuid.UUID) -> AlertRule:
    stmt = scope.filter(select(AlertRule).where(AlertRule.id == rule_id), AlertRule.workspace_id)
    rule = session.scalars(stmt).first()
    if rule is None:
        raise NotFound("no such rule")
    return rule


def _audit_rule(session: Session, actor: Actor, rule: AlertRule, action: str) -> None:
    audit.record(
        session,
        EventType.RULE_CHANGED,
        actor=actor,
        action=f"alert_rule.{action}",
        workspace_id=rule.workspace_id,
        resource_type="alert_rule",
        resource_id=str(rule.id),
        message=f"alert rule {rule.name!r} {action}",
        details={"action": f"alert_rule.{action}"},
    )


def _flush_unique(session: Session, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"a rule named {name!r} exists in this scope") from None


def create_rule(
    session: Session, scope: Scope, data: Mapping[str, Any], *, actor: Actor, settings: Settings
) -> AlertRule:
    spec = rules.validate(data, settings, workspace_id=scope.workspace_id)
    rule = AlertRule(workspace_id=scope.workspace_id, **spec.row_values())
    session.add(rule)
    _flush_unique(session, spec.name)
    _audit_rule(session, actor, rule, "created")
    return rule


def update_rule(
    session: Session,
    scope: Scope,
    rule_id: uuid.UUID,
    changes: Mapping[str, Any],
    *,
    actor: Actor,
    settings: Settings,
) -> AlertRule:
    rule = get_rule(session, scope, rule_id)
    merged = {**rules.RuleSpec.of(rule).model_dump(), **changes}
    spec = rules.validate(merged, settings, workspace_id=rule.workspace_id)
    for name, value in spec.row_values().items():
        setattr(rule, name, value)
    _flush_unique(session, spec.name)
    _audit_rule(session, actor, rule, "updated")
    return rule


def delete_rule(session: Session, scope: Scope, rule_id: uuid.UUID, *, actor: Actor) -> None:
    rule = get_rule(session, scope, rule_id)
    if rule.builtin:
        raise Conflict("a default rule can be disabled (enabled=false), not deleted")
    opened = session.scalar(
        select(func.count())
        .select_from(Alert)
        .where(Alert.rule_id == rule.id, Alert.status.in_(OPEN_ALERT_STATUSES))
    )
    if opened:
        # Deleting it would delete them and their queued notifications with it: the receivers
        # told they fired would never hear they resolved.
        raise Conflict(
            f"the rule has {opened} open alerts: disable it (enabled=false), which resolves "
            "them at the next evaluation and tells the receivers, then delete it"
        )
    _audit_rule(session, actor, rule, "deleted")
    session.delete(rule)
    session.flush()


# -- silences -----------------------------------------------------------------------------


def list_silences(
    session: Session, scope: Scope, *, include_expired: bool = False, now: datetime | None = None
) -> list[Silence]:
    stmt = scope.filter(select(Silence), Silence.workspace_id)
    if not include_expired:
        stmt = stmt.where(Silence.ends_at > (now or utcnow()))
    return list(session.scalars(stmt.order_by(Silence.ends_at.desc())))


def create_silence(
    session: Session,
    scope: Scope,
    matchers: Sequence[MatcherSpec],
    *,
    ends_at: datetime,
    actor: Actor,
    comment: str = "",
    starts_at: datetime | None = None,
    now: datetime | None = None,
) -> Silence:
    now = now or utcnow()
    starts_at = starts_at or now
    if not matchers:
        raise AlertsError("a silence needs at least one matcher")
    if ends_at <= max(starts_at, now):
        raise AlertsError("a silence must end in the future, after it starts")
    if ends_at - starts_at > timedelta(days=366):
        raise AlertsError("a silence lasts at most a year")
    silence = Silence(
        workspace_id=scope.workspace_id,
        matchers=[m.model_dump() for m in matchers],
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=actor.id or actor.type,
        comment=comment,
    )
    session.add(silence)
    session.flush()
    audit.record(
        session,
        EventType.ALERT_SILENCED,
        actor=actor,
        action="silence.created",
        workspace_id=scope.workspace_id,
        resource_type="silence",
        resource_id=str(silence.id),
        message="alerts silenced: " + ", ".join(str(m) for m in matchers),
        details={"action": "silence.created", "ends_at": ends_at.isoformat()},
    )
    return silence


def expire_silence(
    session: Session,
    scope: Scope,
    silence_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> Silence:
    now = now or utcnow()
    stmt = scope.filter(select(Silence).where(Silence.id == silence_id), Silence.workspace_id)
    silence = session.scalars(stmt).first()
    if silence is None:
        raise NotFound("no such silence")
    if silence.ends_at > now:
        # Ended now; one set for later is ended before it starts (its start moved to now, so
        # it is never listed as active again, nor expired twice).
        silence.starts_at = min(silence.starts_at, now)
        silence.ends_at = now
        audit.record(
            session,
            EventType.ALERT_SILENCED,
            actor=actor,
            action="silence.expired",
            workspace_id=silence.workspace_id,
            resource_type="silence",
            resource_id=str(silence.id),
            message="silence expired",
            details={"action": "silence.expired"},
        )
    session.flush()
    return silence
