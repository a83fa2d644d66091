"""The ``herald`` command. Run ``herald --help``, or ``herald COMMAND --help`` for one command."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import click
from pydantic import ValidationError

from herald.settings import get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Herald: publish scheduled social-media posts for many workspaces.

    Configuration comes from HERALD_* environment variables (see docs/configuration.md);
    with none set, Herald runs on embedded defaults: a SQLite file, an in-process broker and
    the provider sandbox.
    """


# -- database ------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema: apply, inspect or create Alembic migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database (HERALD_DATABASE_URL) up to REVISION (default: head)."""
    from herald.migrations import runner

    runner.upgrade(get_settings().database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('-1' for one step, 'base' for empty)."""
    from herald.migrations import runner

    runner.downgrade(get_settings().database_url, revision)


@db.command("current")
def db_current() -> None:
    """Show the revision the database is at."""
    from herald.migrations import runner

    runner.current(get_settings().database_url)


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes.")
def db_revision(message: str) -> None:
    """Autogenerate a migration from the difference between the models and the database."""
    from herald.migrations import runner

    runner.revision(message, get_settings().database_url)


# -- Celery processes ------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q",
    "--queues",
    default="default,publish,tokens,alerts",
    show_default=True,
    help="Comma-separated queues to consume (run separate workers per workload to scale each).",
)
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes or threads.")
@click.option("--pool", default="prefork", show_default=True, help="prefork, threads or solo.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str, concurrency: int | None, pool: str, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker. Extra arguments go to `celery worker` unchanged."""
    from herald.celery_app import app

    argv = ["worker", "--queues", queues, "--pool", pool, "--loglevel", get_settings().log_level]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main([*argv, *celery_args])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat, which enqueues the periodic jobs of herald/beat_schedule.py.

    Run exactly one beat per deployment.
    """
    from herald.celery_app import app

    app.start(["beat", "--loglevel", get_settings().log_level, *celery_args])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=5555, show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery monitoring UI, against Herald's broker."""
    from herald.celery_app import app

    app.start(["flower", f"--port={port}", *flower_args])


# -- the demo and the sandbox ------------------------------------------------------------------


@cli.command()
def demo() -> None:
    """Run the main job end to end on embedded defaults, then report every post.

    Starts the provider sandbox, a worker and beat in this process (SQLite file
    herald-demo.sqlite3, in-process broker), schedules a few dozen posts with faults injected,
    and exits non-zero if any post does not end as the scenario expects.

    """
    from herald.demo import run

    sys.exit(run())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
def sandbox(host: str, port: int) -> None:
    """Serve the provider sandbox: every network's API emulated, plus /_sandbox/ controls.

    Point Herald at it with HERALD_SANDBOX_URL=http://HOST:PORT.
    """
    from herald.sandbox.server import main as serve

    serve(host, port)


# -- the HTTP API -------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the HTTP API under /api/postiz/ with uvicorn (docs at /api/postiz/docs)."""
    import uvicorn

    from herald import db
    from herald.api import create_app
    from herald.telemetry.logging import configure_logging
    from herald.telemetry.tracing import setup_telemetry

    settings = get_settings()
    configure_logging(settings)
    setup_telemetry(settings, engine=db.get_engine(settings), component="api")
    # Requests are logged by the API's middleware (with correlation ids): no access log.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


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


@cli.group()
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


# -- keys ------------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Token encryption keys (HERALD_TOKEN_KEYS)."""


@keys.command("generate")
@click.option("--kid", default="k1", show_default=True, help="Key id to put before the key.")
def keys_generate(kid: str) -> None:
    """Print a new key-ring entry 'kid:key'. Put it first in HERALD_TOKEN_KEYS to seal with it."""
    from herald.security.crypto import generate_key

    click.echo(f"{kid}:{generate_key()}")


def main() -> None:
    """Entry point: configuration errors end in one clear line, not a traceback."""
    try:
        cli()
    except ValidationError as exc:
        problems = "; ".join(err["msg"].removeprefix("Value error, ") for err in exc.errors())
        click.echo(f"herald: configuration error: {problems}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
