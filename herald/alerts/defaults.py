"""The default rules: the seed's five (DESIGN.md §5) and the operational ones.

Migration 0009 installs them (as ``builtin`` rules for all workspaces); :func:`install` puts
back any that were deleted and resets changed ones (``herald alerts rules reset-defaults``).
``deploy/prometheus/rules/herald.yml`` holds the same rules in PromQL; docs/alerts.md has a
runbook for each.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.alerts.rules import RuleSpec
from herald.models import AlertRule, Severity, StateBehaviour

HOUR = 3600

DEFAULT_RULES: tuple[RuleSpec, ...] = (
    RuleSpec(
        name="Failed jobs spike",
        description="More than 20% of publish attempts failed, over more than 10 attempts.",
        metric="publish.failure_rate",
        window_s=HOUR,
        comparison=">",
        threshold=0.2,
        min_samples=11,
        severity=Severity.ERROR,
        runbook="docs/alerts.md#failed-jobs-spike",
    ),
    RuleSpec(
        name="Token refresh failures",
        description="Fewer than 90% of token refreshes succeeded, over more than 5.",
        metric="tokens.refresh_success_rate",
        window_s=HOUR,
        comparison="<",
        threshold=0.9,
        min_samples=6,
        severity=Severity.WARNING,
        runbook="docs/alerts.md#token-refresh-failures",
    ),
    RuleSpec(
        name="Repeated token failures",
        description="Fewer than half of token refreshes succeeded, over more than 3.",
        metric="tokens.refresh_success_rate",
        window_s=HOUR,
        comparison="<",
        threshold=0.5,
        min_samples=4,
        severity=Severity.CRITICAL,
        inhibits=["Token refresh failures"],
        runbook="docs/alerts.md#repeated-token-failures",
    ),
    RuleSpec(
        name="High publish latency",
        description="Provider calls of publish attempts took more than 30 s on average.",
        metric="publish.latency_avg_s",
        window_s=15 * 60,
        comparison=">",
        threshold=30.0,
        min_samples=1,
        severity=Severity.WARNING,
        runbook="docs/alerts.md#high-publish-latency",
    ),
    RuleSpec(
        name="Queue backlog",
        description="More than 100 posts are due and waiting (not queued yet, or queued).",
        metric="queue.backlog",
        window_s=60,
        comparison=">",
        threshold=100,
        severity=Severity.WARNING,
        runbook="docs/alerts.md#queue-backlog",
    ),
    RuleSpec(
        name="Workers down",
        description="No worker consumed a heartbeat in the last 3 minutes.",
        metric="workers.seen",
        window_s=180,
        comparison="<",
        threshold=1,
        severity=Severity.CRITICAL,
        inhibits=["Queue not consumed", "Periodic job missed", "Queue backlog"],
        runbook="docs/alerts.md#workers-down",
    ),
    RuleSpec(
        name="Queue not consumed",
        description="A queue's last heartbeat was consumed more than 3 minutes ago.",
        metric="workers.heartbeat_age_s",
        window_s=60,
        comparison=">",
        threshold=180,
        group_by=["queue"],
        severity=Severity.ERROR,
        runbook="docs/alerts.md#queue-not-consumed",
    ),
    RuleSpec(
        name="Periodic job missed",
        description="dispatch_due has not succeeded for 30 of its intervals: is beat running?",
        metric="jobs.last_success_age_s",
        window_s=60,
        comparison=">",
        threshold=60,
        group_by=["task"],
        filters={"task": "herald.posts.dispatch_due"},
        no_data_state=StateBehaviour.ALERTING,
        severity=Severity.ERROR,
        runbook="docs/alerts.md#periodic-job-missed",
    ),
    RuleSpec(
        name="Audit chain broken",
        description="The audit log verifier found an edited, deleted or reordered row.",
        metric="audit.chain_broken",
        window_s=60,
        comparison=">",
        threshold=0,
        severity=Severity.CRITICAL,
        runbook="docs/alerts.md#audit-chain-broken",
    ),
    RuleSpec(
        name="Notification failures",
        description="Alert notifications were given up after every retry.",
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "alerts.notification_failed"},
        severity=Severity.WARNING,
        runbook="docs/alerts.md#notification-failures",
    ),
    RuleSpec(
        name="Audit write failures",
        description="Audit events could not be written (the operations went on).",
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "audit.write_failed"},
        severity=Severity.ERROR,
        runbook="docs/security.md#audit-write-failures",
    ),
    RuleSpec(
        name="Suspicious activity",
        description="The suspicious-activity detector recorded a finding.",
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "security.suspicious"},
        severity=Severity.CRITICAL,
        runbook="docs/security.md#suspicious-activity",
    ),
    RuleSpec(
        name="Connections need reconnecting",
        description=(
            "A connection's refresh token was refused (invalid_grant): its posts wait for the user."
        ),
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "integrations.needs_reauth"},
        severity=Severity.WARNING,
        runbook="docs/alerts.md#connections-need-reconnecting",
    ),
    RuleSpec(
        name="Publishing workers lost",
        description=(
            "A process died while publishing (OOM killer, crash, kill -9, Flower's Terminate); "
            "its post was settled by asking the network."
        ),
        metric="publish.errors",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"code": "worker_lost"},
        severity=Severity.WARNING,
        runbook="docs/alerts.md#publishing-workers-lost",
    ),
    RuleSpec(
        name="Broker lost messages",
        description=(
            "The broker lost every message it held (a Redis restart without persistence, a "
            "flush): queued posts were sent again."
        ),
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "broker.messages_lost"},
        severity=Severity.WARNING,
        runbook="docs/alerts.md#broker-lost-messages",
    ),
    RuleSpec(
        name="Webhook subscriptions paused",
        description="An integrator's webhook subscription kept failing and was paused.",
        metric="events.count",
        window_s=HOUR,
        comparison=">",
        threshold=0,
        filters={"name": "webhooks.subscription_paused"},
        severity=Severity.WARNING,
        runbook="docs/alerts.md#webhook-subscriptions-paused",
    ),
)


def install(session: Session) -> int:
    """Create the default rules that are missing and reset the ones that changed."""
    existing = {
        rule.name: rule
        for rule in session.scalars(
            select(AlertRule).where(AlertRule.workspace_id.is_(None), AlertRule.builtin.is_(True))
        )
    }
    changed = 0
    for spec in DEFAULT_RULES:
        rule = existing.get(spec.name)
        if rule is None:
            session.add(AlertRule(workspace_id=None, builtin=True, **spec.row_values()))
            changed += 1
            continue
        for name, value in spec.row_values().items():
            if getattr(rule, name) != value:
                setattr(rule, name, value)
                changed += 1
    session.flush()
    return changed
