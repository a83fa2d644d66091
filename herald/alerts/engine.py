"""Evaluation: compute each rule's figure, decide every identity's next state, record it.

One rule is evaluated in one transaction that first locks the rule's row
(``FOR UPDATE SKIP LOCKED`` on Postgres). Two evaluators running at once therefore never
evaluate the same rule together: the second skips a rule the first holds, and the next tick
evaluates it from the state the first committed. State lives only in the database (``alerts``
rows and their timestamps), so a restarted evaluator carries on where the last one stopped.
The partial unique index on open fingerprints is the last guard: an evaluator that somehow
raced another into opening the same alert fails on it and rolls that rule back.

Identity is the rule plus the series' labels, hashed into ``fingerprint``. A series that
vanished from the figure (no attempts of that provider any more) counts as clear.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.alerts import outbox
from herald.alerts.lifecycle import Current, Decision, Verdict, apply_behaviour, decide
from herald.alerts.rules import COMPARE
from herald.models import Alert, AlertRule, AlertStatus, utcnow
from herald.models.alert import OPEN_ALERT_STATUSES
from herald.settings import Settings
from herald.telemetry.figures import FigureError, Sample, Window, compute
from herald.telemetry.logging import redact_text

log = structlog.get_logger("herald.alerts")

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True, slots=True)
class Judged:
    """What one evaluation found for one identity."""

    series: dict[str, str]
    sample: Sample | None
    verdict: Verdict  # before the rule's no-data / error behaviour


@dataclass
class RuleOutcome:
    rule: str
    evaluated: bool = True
    error: str | None = None
    transitions: list[tuple[str, str]] = field(default_factory=list)  # (fingerprint, kind)


def fingerprint(rule_id: uuid.UUID, series: Mapping[str, str]) -> str:
    body = json.dumps({"rule": str(rule_id), "series": dict(sorted(series.items()))})
    return hashlib.sha256(body.encode()).hexdigest()


def alert_labels(rule: AlertRule, series: Mapping[str, str]) -> dict[str, str]:
    """Everything matchers can see: the rule's labels, the series', name, severity, scope."""
    labels = {**rule.labels, **series, "rule": rule.name, "severity": rule.severity.value}
    if rule.workspace_id is not None:
        labels["workspace_id"] = str(rule.workspace_id)
    return labels


def verdict_of(rule: AlertRule, sample: Sample) -> Verdict:
    if sample.value is None or sample.count < rule.min_samples:
        return Verdict.NO_DATA
    return (
        Verdict.HOLDS if COMPARE[rule.comparison](sample.value, rule.threshold) else Verdict.CLEAR
    )


def _summary(rule: AlertRule, sample: Sample | None, verdict: Verdict) -> str:
    if verdict is Verdict.ERROR:
        return f"{rule.name}: evaluation failed"
    if sample is None or sample.value is None or verdict is Verdict.NO_DATA:
        count = sample.count if sample else 0
        return f"{rule.name}: {count} samples, fewer than the {rule.min_samples} required"
    selector = {**rule.filters, **sample.labels}
    series = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    where = "{" + series + "}" if series else ""
    return (
        f"{rule.metric}{where} = {sample.value:.4g} {rule.comparison} {rule.threshold:g}"
        f" over {rule.window_s}s"
    )


class Evaluation:
    """One evaluation of one locked rule at ``now``."""

    def __init__(self, session: Session, rule: AlertRule, now: datetime, settings: Settings):
        self.session = session
        self.rule = rule
        self.now = now
        self.settings = settings
        self.outcome = RuleOutcome(rule.name)

    def _samples(self) -> list[Sample] | str:
        """The figure's series, or the reason evaluation failed (the transaction survives)."""
        rule = self.rule
        try:
            with self.session.begin_nested():
                return compute(
                    self.session,
                    rule.metric,
                    Window.last(rule.window_s, self.now),
                    workspace_id=rule.workspace_id,
                    group_by=list(rule.group_by),
                    filters=dict(rule.filters),
                )
        except (FigureError, SQLAlchemyError, ArithmeticError) as exc:
            return redact_text(f"{type(exc).__name__}: {exc}")[:500]

    def _open_alerts(self) -> dict[str, Alert]:
        rows = self.session.scalars(
            select(Alert).where(
                Alert.rule_id == self.rule.id, Alert.status.in_(OPEN_ALERT_STATUSES)
            )
        ).all()
        return {alert.fingerprint: alert for alert in rows}

    def _judge(self, open_alerts: dict[str, Alert]) -> dict[str, Judged]:
        rule = self.rule
        found = self._samples()
        judged: dict[str, Judged] = {}
        if isinstance(found, str):
            self.outcome.error = found
            targets = {a.fingerprint: dict(a.labels) for a in open_alerts.values()}
            for fp, labels in (targets or {fingerprint(rule.id, {}): {}}).items():
                series = {k: labels[k] for k in rule.group_by if k in labels}
                judged[fp] = Judged(series, None, Verdict.ERROR)
            return judged
        # A split rule with no series at all: the rule as a whole has no data.
        for sample in found or [Sample({}, None, 0)]:
            series = dict(sample.labels)
            judged[fingerprint(rule.id, series)] = Judged(series, sample, verdict_of(rule, sample))
        for fp, alert in open_alerts.items():  # vanished series are clear
            if fp not in judged:
                series = {k: str(v) for k, v in alert.labels.items() if k in rule.group_by}
                judged[fp] = Judged(series, None, Verdict.CLEAR)
        return judged

    def run(self) -> RuleOutcome:
        rule = self.rule
        open_alerts = self._open_alerts()
        for fp, found in self._judge(open_alerts).items():
            self._step(fp, found, open_alerts.get(fp))
        rule.last_evaluated_at = self.now
        rule.last_error = self.outcome.error
        return self.outcome

    def close(self) -> RuleOutcome:
        """A disabled rule's open alerts, each cleared as if its condition had ended (a firing
        one resolves, and the receivers told of it hear so): a rule that is no longer evaluated
        leaves nothing firing, repeating, or inhibiting other rules for good."""
        for alert in self._open_alerts().values():
            current = Current(
                alert.status,
                alert.pending_since,
                alert.recovering_since,
                told=bool(alert.notify_seq),
            )
            decision = decide(current, Verdict.CLEAR, self.now, for_s=0, keep_firing_for_s=0)
            series = {k: str(v) for k, v in alert.labels.items() if k in self.rule.group_by}
            self._record(alert, decision, Judged(series, None, Verdict.CLEAR))
        self.rule.last_evaluated_at = self.now
        return self.outcome

    def _step(self, fp: str, found: Judged, alert: Alert | None) -> None:
        rule = self.rule
        verdict = apply_behaviour(found.verdict, no_data=rule.no_data_state, error=rule.error_state)
        current = Current(
            alert.status if alert else None,
            alert.pending_since if alert else None,
            alert.recovering_since if alert else None,
            told=bool(alert and alert.notify_seq),
        )
        decision = decide(
            current, verdict, self.now, for_s=rule.for_s, keep_firing_for_s=rule.keep_firing_for_s
        )
        if alert is None and decision.status is None:
            return
        if alert is None:
            alert = self._open(fp, found.series)
        self._record(alert, decision, found)

    def _open(self, fp: str, series: dict[str, str]) -> Alert:
        alert = Alert(
            id=uuid.uuid4(),
            rule_id=self.rule.id,
            workspace_id=self.rule.workspace_id or _workspace_of(series),
            fingerprint=fp,
            labels=alert_labels(self.rule, series),
            severity=self.rule.severity,
            status=AlertStatus.PENDING,
            pending_since=self.now,
            notify_seq=0,
        )
        self.session.add(alert)
        return alert

    def _record(self, alert: Alert, decision: Decision, found: Judged) -> None:
        alert.last_evaluated_at = self.now
        # The rule as it is now (renamed, its severity or labels edited): silences, inhibition
        # and notifications see the alert as its rule says (its identity does not change).
        labels = alert_labels(self.rule, found.series)
        if labels != alert.labels:
            alert.labels = labels
        if alert.severity is not self.rule.severity:
            alert.severity = self.rule.severity
        sample = found.sample
        if sample is not None and sample.value is not None:
            alert.value = sample.value
        if sample is not None or found.verdict is Verdict.ERROR:
            alert.summary = _summary(self.rule, sample, found.verdict)
        if decision.status is None:
            return
        alert.status = decision.status
        alert.pending_since = decision.pending_since or alert.pending_since
        alert.recovering_since = decision.recovering_since
        if decision.tell == "firing":
            alert.fired_at = self.now
        if decision.status is AlertStatus.RESOLVED:
            alert.resolved_at = self.now
        self.session.flush()
        if decision.tell is not None:
            outbox.enqueue(
                self.session, alert, self.rule, decision.tell, self.settings, now=self.now
            )
            self.outcome.transitions.append((alert.fingerprint, decision.tell))
            log.info(
                "alert.transition",
                rule=self.rule.name,
                fingerprint=alert.fingerprint,
                transition=decision.tell,
                severity=alert.severity.value,
            )


def _workspace_of(series: Mapping[str, str]) -> uuid.UUID | None:
    value = series.get("workspace_id")
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _lock_rule(session: Session, rule_id: uuid.UUID, *, enabled: bool = True) -> AlertRule | None:
    """The rule's row, locked for this transaction; None if another evaluator holds it (or it
    is not ``enabled`` as asked)."""
    return session.scalars(
        select(AlertRule)
        .where(AlertRule.id == rule_id, AlertRule.enabled.is_(enabled))
        .with_for_update(skip_locked=True)
    ).first()


def evaluate_rule(
    session: Session, rule_id: uuid.UUID, settings: Settings, *, now: datetime | None = None
) -> RuleOutcome | None:
    """Evaluate one rule in the session's transaction; None when it is disabled or busy."""
    rule = _lock_rule(session, rule_id)
    if rule is None:
        return None
    return Evaluation(session, rule, now or utcnow(), settings).run()


def close_rule(
    session: Session, rule_id: uuid.UUID, settings: Settings, *, now: datetime | None = None
) -> RuleOutcome | None:
    """Clear a disabled rule's open alerts (:meth:`Evaluation.close`); None when it is enabled
    again or busy."""
    rule = _lock_rule(session, rule_id, enabled=False)
    if rule is None:
        return None
    return Evaluation(session, rule, now or utcnow(), settings).close()


def enabled_rules(session: Session) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(AlertRule.id).where(AlertRule.enabled.is_(True)).order_by(AlertRule.name)
        )
    )


def disabled_rules_with_open_alerts(session: Session) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(AlertRule.id)
            .where(
                AlertRule.enabled.is_(False),
                select(Alert.id)
                .where(Alert.rule_id == AlertRule.id, Alert.status.in_(OPEN_ALERT_STATUSES))
                .exists(),
            )
            .order_by(AlertRule.name)
        )
    )


def evaluate_all(
    sessions: SessionFactory, settings: Settings, *, now: datetime | None = None
) -> list[RuleOutcome]:
    """Evaluate every enabled rule, and clear the open alerts of every disabled one, each in a
    transaction of its own."""
    with sessions() as session:
        rule_ids = [(rule_id, evaluate_rule) for rule_id in enabled_rules(session)]
        rule_ids += [(rule_id, close_rule) for rule_id in disabled_rules_with_open_alerts(session)]
    outcomes = []
    for rule_id, step in rule_ids:
        try:
            with sessions() as session:
                outcome = step(session, rule_id, settings, now=now)
        except IntegrityError:
            # Another evaluator opened the same alert first; its state stands.
            log.warning("alert.evaluation_raced", rule_id=str(rule_id))
            continue
        if outcome is None:
            continue
        if outcome.error:
            log.warning("alert.evaluation_failed", rule=outcome.rule, error=outcome.error)
        outcomes.append(outcome)
    return outcomes


def service_sessions(reason: str) -> SessionFactory:
    """Transactions open to every workspace (evaluation and delivery are cross-tenant)."""

    @contextmanager
    def scope() -> Iterator[Session]:
        with db.session_scope() as session:
            db.service_scope(session, reason)
            yield session

    return scope


def check_alerts(settings: Settings, *, now: datetime | None = None) -> list[RuleOutcome]:
    """Evaluate every enabled rule now: the beat task, the cron endpoint and the CLI."""
    return evaluate_all(service_sessions("alerts.evaluate"), settings, now=now)
