"""``/api/postiz/monitoring/`` alert routes (alerts, stats, rules, silences, the figure
catalogue) and ``POST /api/postiz/cron/check-alerts``.

Access: see :mod:`herald.api.monitoring_access`. Every route is a thin call into
:mod:`herald.alerts.service`, whose errors map to the API's one error format.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from herald.alerts import service
from herald.alerts.engine import check_alerts
from herald.alerts.matchers import Matcher, MatcherSpec, regex_error
from herald.alerts.rules import RuleInvalid, RuleSpec
from herald.api.deps import audit_now, request_actor, settings_of
from herald.api.errors import COMMON_RESPONSES, ApiError, ErrorEnvelope
from herald.api.monitoring_access import Monitoring
from herald.api.paths import PREFIX
from herald.contracts import Instant
from herald.db import service_scope, session_scope
from herald.models import Alert, AlertRule, AlertStatus, Severity, Silence, utcnow
from herald.security.audit import EventType, Outcome
from herald.security.audit import Severity as AuditSeverity
from herald.telemetry.figures import CATALOGUE

log = structlog.get_logger("herald.api")

router = APIRouter(
    prefix=f"{PREFIX}/monitoring",
    tags=["monitoring"],
    responses={
        **COMMON_RESPONSES,
        403: {"model": ErrorEnvelope, "description": "Not an owner or admin"},
    },
)
cron_router = APIRouter(prefix=f"{PREFIX}/cron", tags=["cron"])
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorEnvelope, "description": "Not possible in the current state"}
}


@contextmanager
def _service_errors() -> Iterator[None]:
    try:
        yield
    except RuleInvalid as exc:
        # The body had the right shape (FastAPI checked it against the document); what the
        # catalogue and the settings say against it is a rule of its own.
        raise ApiError(
            422, "rule_invalid", "the rule is not valid", details={"fields": exc.problems}
        ) from None
    except service.AlertsError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@contextmanager
def _session() -> Iterator[Session]:
    with _service_errors(), session_scope() as session:
        service_scope(session, "api.monitoring")
        yield session


# -- bodies ------------------------------------------------------------------------------------


class AlertOut(BaseModel):
    id: uuid.UUID
    rule_id: uuid.UUID
    rule: str
    workspace_id: uuid.UUID | None
    fingerprint: str
    labels: dict[str, Any]
    state: AlertStatus
    severity: Severity
    value: float | None
    summary: str
    pending_since: datetime
    fired_at: datetime | None
    recovering_since: datetime | None
    resolved_at: datetime | None
    last_evaluated_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_note: str | None
    silenced_by: list[uuid.UUID]
    inhibited: bool

    @classmethod
    def of(cls, view: service.AlertView) -> AlertOut:
        a: Alert = view.alert
        return cls(
            id=a.id,
            rule_id=a.rule_id,
            rule=view.rule,
            workspace_id=a.workspace_id,
            fingerprint=a.fingerprint,
            labels=a.labels,
            state=a.status,
            severity=a.severity,
            value=a.value,
            summary=a.summary,
            pending_since=a.pending_since,
            fired_at=a.fired_at,
            recovering_since=a.recovering_since,
            resolved_at=a.resolved_at,
            last_evaluated_at=a.last_evaluated_at,
            acknowledged_by=a.acknowledged_by,
            acknowledged_at=a.acknowledged_at,
            ack_note=a.ack_note,
            silenced_by=view.silenced_by,
            inhibited=view.inhibited,
        )


class AlertPage(BaseModel):
    items: list[AlertOut]


class AckRequest(BaseModel):
    note: str = Field(default="", max_length=2000)


class AckByIdRequest(AckRequest):
    alert_id: uuid.UUID


class StatsOut(BaseModel):
    open_total: int
    open_by_severity: dict[str, int]
    open_by_state: dict[str, int]
    since: datetime
    acknowledged: int
    mean_time_to_acknowledge_s: float | None
    resolved: int
    mean_time_to_resolve_s: float | None


class RuleOut(RuleSpec):
    id: uuid.UUID
    workspace_id: uuid.UUID | None
    builtin: bool
    last_evaluated_at: datetime | None
    last_error: str | None

    @classmethod
    def of_rule(cls, rule: AlertRule) -> RuleOut:
        return cls(
            **RuleSpec.of(rule).model_dump(),
            id=rule.id,
            workspace_id=rule.workspace_id,
            builtin=rule.builtin,
            last_evaluated_at=rule.last_evaluated_at,
            last_error=rule.last_error,
        )


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[MatcherSpec] = Field(min_length=1, max_length=20)
    ends_at: Instant
    starts_at: Instant | None = None
    comment: str = Field(default="", max_length=2000)


class SilenceOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID | None
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    active: bool

    @classmethod
    def of(cls, silence: Silence, now: datetime) -> SilenceOut:
        return cls(
            id=silence.id,
            workspace_id=silence.workspace_id,
            matchers=[Matcher.model_validate(m) for m in silence.matchers],
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            created_by=silence.created_by,
            comment=silence.comment,
            active=silence.starts_at <= now < silence.ends_at,
        )


class FigureOut(BaseModel):
    name: str
    description: str
    unit: str
    labels: list[str]
    per_workspace: bool


# -- alerts --------------------------------------------------------------------------------------


@router.get("/alerts")
def list_alerts(
    caller: Monitoring,
    severity: Annotated[list[Severity] | None, Query(description="Repeat for several")] = None,
    state: Annotated[
        list[AlertStatus] | None, Query(description="Default: every open state")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertPage:
    """Alerts, newest first, with whether a silence or an inhibition mutes each."""
    with _session() as session:
        views = service.list_alerts(
            session, caller.scope, severity=severity or (), state=state or (), limit=limit
        )
        return AlertPage(items=[AlertOut.of(v) for v in views])


@router.get("/alerts/stats")
def alert_stats(
    caller: Monitoring,
    since: Annotated[
        Instant | None, Query(description="Mean times cover alerts fired since (30 days)")
    ] = None,
) -> StatsOut:
    """Open alerts by severity and state; mean time to acknowledge and to resolve."""
    now = utcnow()
    with _session() as session:
        figures = service.stats(
            session, caller.scope, since=since or now - timedelta(days=30), now=now
        )
    return StatsOut(**figures)


@router.get("/alerts/{alert_id}")
def get_alert(alert_id: uuid.UUID, caller: Monitoring) -> AlertOut:
    with _session() as session:
        alert = service.get_alert(session, caller.scope, alert_id)
        return AlertOut.of(service.AlertView(alert, _rule_name(session, alert), [], False))


def _rule_name(session: Session, alert: Alert) -> str:
    rule = session.get(AlertRule, alert.rule_id)
    return rule.name if rule else ""


def _ack(caller: Any, request: Request, alert_id: uuid.UUID, note: str) -> AlertOut:
    with _session() as session:
        alert = service.acknowledge(
            session,
            caller.scope,
            alert_id,
            actor=caller.actor,
            note=note,
            settings=settings_of(request),
        )
        return AlertOut.of(service.AlertView(alert, _rule_name(session, alert), [], False))


@router.post("/alerts/{alert_id}/ack", responses=CONFLICT)
def acknowledge(
    alert_id: uuid.UUID, caller: Monitoring, request: Request, body: AckRequest | None = None
) -> AlertOut:
    """Acknowledge an open alert (who and when are recorded; the note is optional)."""
    return _ack(caller, request, alert_id, (body or AckRequest()).note)


@router.post("/alerts", responses=CONFLICT)
def acknowledge_by_body(body: AckByIdRequest, caller: Monitoring, request: Request) -> AlertOut:
    """The seed's form of acknowledging: ``{"alert_id": …, "note": …}``."""
    return _ack(caller, request, body.alert_id, body.note)


# -- rules ---------------------------------------------------------------------------------------


@router.get("/figures")
def list_figures(caller: Monitoring) -> list[FigureOut]:
    """The figures a rule can name, with the labels each can be split or filtered by."""
    return [
        FigureOut(
            name=f.name,
            description=f.description,
            unit=f.unit,
            labels=list(f.labels),
            per_workspace=f.per_workspace,
        )
        for f in CATALOGUE.values()
    ]


@router.get("/rules")
def list_rules(caller: Monitoring) -> list[RuleOut]:
    with _session() as session:
        return [RuleOut.of_rule(r) for r in service.list_rules(session, caller.scope)]


@router.post("/rules", status_code=201, responses=CONFLICT)
def create_rule(body: RuleSpec, caller: Monitoring, request: Request) -> RuleOut:
    """A rule for the caller's workspace (the service role without ``workspace_id``: for all)."""
    with _session() as session:
        rule = service.create_rule(
            session,
            caller.scope,
            body.model_dump(),
            actor=caller.actor,
            settings=settings_of(request),
        )
        return RuleOut.of_rule(rule)


@router.get("/rules/{rule_id}")
def get_rule(rule_id: uuid.UUID, caller: Monitoring) -> RuleOut:
    with _session() as session:
        return RuleOut.of_rule(service.get_rule(session, caller.scope, rule_id))


@router.patch("/rules/{rule_id}", responses=CONFLICT)
def update_rule(
    rule_id: uuid.UUID,
    caller: Monitoring,
    request: Request,
    changes: Annotated[dict[str, Any], Body(description="Any fields of a rule")],
) -> RuleOut:
    with _session() as session:
        rule = service.update_rule(
            session,
            caller.scope,
            rule_id,
            changes,
            actor=caller.actor,
            settings=settings_of(request),
        )
        return RuleOut.of_rule(rule)


@router.delete("/rules/{rule_id}", status_code=204, responses=CONFLICT)
def delete_rule(rule_id: uuid.UUID, caller: Monitoring) -> Response:
    with _session() as session:
        service.delete_rule(session, caller.scope, rule_id, actor=caller.actor)
    return Response(status_code=204)


# -- silences ------------------------------------------------------------------------------------


@router.get("/silences")
def list_silences(caller: Monitoring, include_expired: bool = False) -> list[SilenceOut]:
    now = utcnow()
    with _session() as session:
        return [
            SilenceOut.of(s, now)
            for s in service.list_silences(
                session, caller.scope, include_expired=include_expired, now=now
            )
        ]


def _check_matchers(specs: list[MatcherSpec]) -> None:
    """``422 matcher_invalid`` naming each matcher whose regular expression does not compile:
    the body had the shape the document asks for; this is a rule of its own."""
    problems = [
        {
            "field": f"body.matchers.{index}.value",
            "message": "not a regular expression that compiles",
            "type": "regex_invalid",
        }
        for index, spec in enumerate(specs)
        if regex_error(spec) is not None
    ]
    if problems:
        raise ApiError(
            422, "matcher_invalid", "a matcher is not valid", details={"fields": problems}
        )


@router.post("/silences", status_code=201)
def create_silence(body: SilenceIn, caller: Monitoring) -> SilenceOut:
    """Mute notifications of the alerts matching every matcher until ``ends_at``."""
    now = utcnow()
    _check_matchers(body.matchers)
    with _session() as session:
        silence = service.create_silence(
            session,
            caller.scope,
            body.matchers,
            ends_at=body.ends_at,
            starts_at=body.starts_at,
            comment=body.comment,
            actor=caller.actor,
            now=now,
        )
        return SilenceOut.of(silence, now)


@router.delete("/silences/{silence_id}")
def expire_silence(silence_id: uuid.UUID, caller: Monitoring) -> SilenceOut:
    """End a silence now (it stays listed with ``include_expired``)."""
    now = utcnow()
    with _session() as session:
        silence = service.expire_silence(
            session, caller.scope, silence_id, actor=caller.actor, now=now
        )
        return SilenceOut.of(silence, now)


# -- cron ------------------------------------------------------------------------------------------


class CheckAlertsOut(BaseModel):
    rules: int
    transitions: int
    errors: int


@cron_router.post(
    "/check-alerts",
    responses={401: {"model": ErrorEnvelope, "description": "Missing or wrong cron secret"}},
)
def check_alerts_now(request: Request) -> CheckAlertsOut:
    """Evaluate every rule now. ``Authorization: Bearer <HERALD_CRON_SECRET>``."""
    settings = settings_of(request)
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    expected = settings.cron_secret.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        actor = request_actor(request, "cron", None)
        log.warning("security.cron_denied", path=request.url.path, presented=bool(given))
        audit_now(
            EventType.ACCESS_DENIED,
            actor=actor,
            outcome=Outcome.DENIED,
            severity=AuditSeverity.HIGH,
            message="cron endpoint called without the cron secret",
            details={"path": request.url.path, "presented": bool(given)},
        )
        raise ApiError(
            401,
            "unauthorized",
            "the cron secret is missing or wrong",
            headers={"WWW-Authenticate": "Bearer"},
        )
    outcomes = check_alerts(settings)
    return CheckAlertsOut(
        rules=len(outcomes),
        transitions=sum(len(o.transitions) for o in outcomes),
        errors=sum(1 for o in outcomes if o.error),
    )
