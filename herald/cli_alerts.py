"""``herald alerts …``: alerts, acknowledgements, silences and rules as readable tables.

Each command works on the database directly, in the service scope (every workspace unless
``--workspace`` names one), and goes through :mod:`herald.alerts.service` like the API does.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import click

from herald.settings import get_settings

# -- alerts ----------------------------------------------------------------------------------------


def _alerts_session() -> Any:
    from herald.alerts.engine import service_sessions

    return service_sessions("cli.alerts")()


def _scope(workspace: str | None) -> Any:
    from herald.alerts.service import Scope

    return Scope(uuid.UUID(workspace) if workspace else None)


def _cli_actor(by: str) -> Any:
    from herald.security.audit import Actor

    return Actor("cli", by)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _fail(message: str) -> None:
    click.echo(f"herald: {message}", err=True)
    sys.exit(1)


@click.group()
def alerts() -> None:
    """Alerts: list and acknowledge them, silence them, manage rules, evaluate now."""


_WORKSPACE = click.option("--workspace", help="One workspace's (default: every workspace).")


@alerts.command("list")
@_WORKSPACE
@click.option("--severity", multiple=True, help="info, warning, error or critical (repeatable).")
@click.option("--state", multiple=True, help="pending, firing, recovering, resolved, … ")
@click.option("--limit", type=int, default=50, show_default=True)
def alerts_list(
    workspace: str | None, severity: tuple[str, ...], state: tuple[str, ...], limit: int
) -> None:
    """Open alerts (or those in --state), newest first."""
    from herald.alerts import service
    from herald.models import AlertStatus, Severity

    with _alerts_session() as session:
        views = service.list_alerts(
            session,
            _scope(workspace),
            severity=[Severity(s) for s in severity],
            state=[AlertStatus(s) for s in state],
            limit=limit,
        )
        rows = [
            [
                str(v.alert.id),
                v.rule,
                v.alert.status.value
                + (" (silenced)" if v.silenced_by else "")
                + (" (inhibited)" if v.inhibited else ""),
                v.alert.severity.value,
                v.alert.summary,
                _when(v.alert.fired_at or v.alert.pending_since),
                v.alert.acknowledged_by or "-",
            ]
            for v in views
        ]
    _table(
        f"{len(rows)} alerts",
        ["id", "rule", "state", "severity", "summary", "since", "acknowledged by"],
        rows,
    )


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--note", default="", help="Why, or what is being done.")
@click.option("--by", default="cli", show_default=True, help="Who acknowledges.")
def alerts_ack(alert_id: str, note: str, by: str) -> None:
    """Acknowledge an open alert."""
    from herald.alerts import service

    try:
        with _alerts_session() as session:
            alert = service.acknowledge(
                session,
                service.ALL,
                uuid.UUID(alert_id),
                actor=_cli_actor(by),
                note=note,
                settings=get_settings(),
            )
            click.echo(f"acknowledged {alert.id} by {alert.acknowledged_by}")
    except (service.AlertsError, ValueError) as exc:
        _fail(str(exc))


@alerts.command("silence")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", default="1h", show_default=True, help="e.g. 30m, 2h, 1d")
@click.option("--comment", default="")
@click.option("--by", default="cli", show_default=True)
@_WORKSPACE
def alerts_silence(
    matchers: tuple[str, ...], duration: str, comment: str, by: str, workspace: str | None
) -> None:
    """Silence alerts matching every MATCHER (name=value, name!=value, name=~regex, name!~regex)."""
    from datetime import timedelta

    from herald.alerts import service
    from herald.alerts.matchers import parse_text
    from herald.models import utcnow

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(duration[:-1]) * units[duration[-1]]
        parsed = [parse_text(m) for m in matchers]
        with _alerts_session() as session:
            silence = service.create_silence(
                session,
                _scope(workspace),
                parsed,
                ends_at=utcnow() + timedelta(seconds=seconds),
                actor=_cli_actor(by),
                comment=comment,
            )
            click.echo(f"silence {silence.id} until {_when(silence.ends_at)}")
    except (KeyError, ValueError, service.AlertsError) as exc:
        _fail(f"cannot silence: {exc}")


@alerts.command("silences")
@_WORKSPACE
@click.option("--expired", is_flag=True, help="Include expired silences.")
def alerts_silences(workspace: str | None, expired: bool) -> None:
    """List silences."""
    from herald.alerts import service
    from herald.alerts.matchers import Matcher

    with _alerts_session() as session:
        rows = [
            [
                str(s.id),
                " ".join(str(Matcher.model_validate(m)) for m in s.matchers),
                _when(s.starts_at),
                _when(s.ends_at),
                s.created_by,
                s.comment,
            ]
            for s in service.list_silences(session, _scope(workspace), include_expired=expired)
        ]
    _table(f"{len(rows)} silences", ["id", "matchers", "starts", "ends", "by", "comment"], rows)


@alerts.command("unsilence")
@click.argument("silence_id")
@click.option("--by", default="cli", show_default=True)
def alerts_unsilence(silence_id: str, by: str) -> None:
    """End a silence now."""
    from herald.alerts import service

    try:
        with _alerts_session() as session:
            service.expire_silence(
                session, service.ALL, uuid.UUID(silence_id), actor=_cli_actor(by)
            )
    except (ValueError, service.AlertsError) as exc:
        _fail(str(exc))
    click.echo(f"silence {silence_id} expired")


@alerts.group("rules", invoke_without_command=True)
@click.pass_context
def alerts_rules(ctx: click.Context) -> None:
    """Alert rules: list (the default), add, enable, disable, delete, reset-defaults."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(rules_list)


@alerts_rules.command("list")
@_WORKSPACE
def rules_list(workspace: str | None = None) -> None:
    """Every rule with its condition."""
    from herald.alerts import service

    with _alerts_session() as session:
        rows = [
            [
                str(r.id),
                r.name,
                f"{r.metric} {r.comparison} {r.threshold:g}"
                + (f" by {','.join(r.group_by)}" if r.group_by else "")
                + (f" {r.filters}" if r.filters else ""),
                f"{r.window_s}s / for {r.for_s}s",
                r.severity.value,
                "yes" if r.enabled else "no",
                str(r.workspace_id or "all"),
                r.last_error or "",
            ]
            for r in service.list_rules(session, _scope(workspace))
        ]
    _table(
        f"{len(rows)} rules",
        ["id", "name", "condition", "window", "severity", "enabled", "scope", "last error"],
        rows,
    )


@alerts_rules.command("add")
@click.argument("definition")
@_WORKSPACE
@click.option("--by", default="cli", show_default=True)
def rules_add(definition: str, workspace: str | None, by: str) -> None:
    """Add a rule from JSON (or @file.json): {"name", "metric", "comparison", "threshold", …}."""
    import json
    from pathlib import Path

    from herald.alerts import service
    from herald.alerts.rules import RuleInvalid

    text = Path(definition[1:]).read_text() if definition.startswith("@") else definition
    try:
        with _alerts_session() as session:
            rule = service.create_rule(
                session,
                _scope(workspace),
                json.loads(text),
                actor=_cli_actor(by),
                settings=get_settings(),
            )
            click.echo(f"rule {rule.id} {rule.name!r} added")
    except RuleInvalid as exc:
        _fail("invalid rule: " + "; ".join(f"{p['field']}: {p['message']}" for p in exc.problems))
    except (ValueError, service.AlertsError) as exc:
        _fail(str(exc))


def _set_enabled(rule_id: str, enabled: bool, by: str) -> None:
    from herald.alerts import service

    try:
        with _alerts_session() as session:
            rule = service.update_rule(
                session,
                service.ALL,
                uuid.UUID(rule_id),
                {"enabled": enabled},
                actor=_cli_actor(by),
                settings=get_settings(),
            )
            click.echo(f"rule {rule.name!r} {'enabled' if enabled else 'disabled'}")
    except (ValueError, service.AlertsError) as exc:
        _fail(str(exc))


@alerts_rules.command("enable")
@click.argument("rule_id")
@click.option("--by", default="cli", show_default=True)
def rules_enable(rule_id: str, by: str) -> None:
    """Enable a rule."""
    _set_enabled(rule_id, True, by)


@alerts_rules.command("disable")
@click.argument("rule_id")
@click.option("--by", default="cli", show_default=True)
def rules_disable(rule_id: str, by: str) -> None:
    """Disable a rule (default rules are disabled, never deleted)."""
    _set_enabled(rule_id, False, by)


@alerts_rules.command("delete")
@click.argument("rule_id")
@click.option("--by", default="cli", show_default=True)
def rules_delete(rule_id: str, by: str) -> None:
    """Delete a custom rule."""
    from herald.alerts import service

    try:
        with _alerts_session() as session:
            service.delete_rule(session, service.ALL, uuid.UUID(rule_id), actor=_cli_actor(by))
    except (ValueError, service.AlertsError) as exc:
        _fail(str(exc))
    click.echo(f"rule {rule_id} deleted")


@alerts_rules.command("reset-defaults")
def rules_reset_defaults() -> None:
    """Put back the default rules that were deleted or changed."""
    from herald.alerts.defaults import install

    with _alerts_session() as session:
        click.echo(f"{install(session)} default rule fields restored")


@alerts.command("evaluate")
def alerts_evaluate() -> None:
    """Evaluate every rule now (what beat does every minute)."""
    from herald.alerts.engine import check_alerts

    outcomes = check_alerts(get_settings())
    for outcome in outcomes:
        for fingerprint, kind in outcome.transitions:
            click.echo(f"{outcome.rule}: {kind} ({fingerprint[:12]})")
        if outcome.error:
            click.echo(f"{outcome.rule}: evaluation failed: {outcome.error}", err=True)
    click.echo(f"{len(outcomes)} rules evaluated")


@alerts.command("notify")
def alerts_notify() -> None:
    """Deliver the notification outbox now."""
    from herald.alerts.engine import service_sessions
    from herald.alerts.notify import deliver

    report = deliver(service_sessions("cli.alerts.notify"), get_settings())
    click.echo(", ".join(f"{k} {v}" for k, v in vars(report).items()))


@alerts.command("stats")
@_WORKSPACE
@click.option("--days", type=int, default=30, show_default=True)
def alerts_stats(workspace: str | None, days: int) -> None:
    """Open alerts by severity; mean time to acknowledge and to resolve."""
    from datetime import timedelta

    from herald.alerts import service
    from herald.models import utcnow

    with _alerts_session() as session:
        figures = service.stats(session, _scope(workspace), since=utcnow() - timedelta(days=days))
    rows = [[k, str(v)] for k, v in figures["open_by_severity"].items()]
    rows += [
        ["mean time to acknowledge (s)", str(figures["mean_time_to_acknowledge_s"])],
        ["mean time to resolve (s)", str(figures["mean_time_to_resolve_s"])],
    ]
    _table(f"{figures['open_total']} open alerts", ["", "value"], rows)
