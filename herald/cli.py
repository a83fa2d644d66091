"""The ``herald`` command. Run ``herald --help``, or ``herald COMMAND --help`` for one command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from herald.cli_alerts import alerts
from herald.cli_audit import audit
from herald.cli_connect import integrations, members, workspaces
from herald.cli_webhooks import webhooks
from herald.settings import Settings, get_settings

if TYPE_CHECKING:
    from herald.migrations.roles import Roles


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
@click.option(
    "--roles",
    "admin_url",
    metavar="ADMIN_URL",
    envvar="HERALD_DATABASE_ADMIN_URL",
    default=None,
    help="First create or repair the three roles as this Postgres superuser (as 'herald db "
    "roles --apply'), and again after migrating so their grants cover the new tables. Also "
    "read from HERALD_DATABASE_ADMIN_URL (a URL with a password is better kept off the "
    "command line).",
)
def db_upgrade(revision: str, admin_url: str | None) -> None:
    """Migrate the database up to REVISION (default: head), as HERALD_MIGRATION_DATABASE_URL
    (HERALD_DATABASE_URL when unset)."""
    from herald.migrations import runner

    settings = get_settings()
    if admin_url:
        _apply_roles(admin_url)
    runner.upgrade(settings.migration_database_url or settings.database_url, revision)
    if admin_url:
        _apply_roles(admin_url)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('-1' for one step, 'base' for empty)."""
    from herald.migrations import runner

    settings = get_settings()
    runner.downgrade(settings.migration_database_url or settings.database_url, revision)


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


@db.command("roles")
@click.option(
    "--apply",
    "admin_url",
    metavar="ADMIN_URL",
    default=None,
    help="Run the SQL as this Postgres superuser URL instead of printing it.",
)
def db_roles(admin_url: str | None) -> None:
    """Print (or apply) the SQL for the migration, runtime and service roles.

    Role names are the user names of HERALD_MIGRATION_DATABASE_URL, HERALD_DATABASE_URL and
    HERALD_SERVICE_DATABASE_URL (herald_migration, herald_runtime, herald_service where a URL
    names none). Printed SQL carries no password; --apply sets those the URLs carry.
    """
    if admin_url is not None:
        _apply_roles(admin_url)
        return
    from herald.migrations import roles

    database, names, _ = _roles_of_settings()
    for statement in roles.role_statements(database, names):
        click.echo(statement + ";")


def _roles_of_settings() -> tuple[str, Roles, tuple[str, str | None, str | None]]:
    """The database, the three role names and the URLs they come from (the settings')."""
    from sqlalchemy.engine import make_url

    from herald.migrations import roles

    settings = get_settings()
    urls = (settings.database_url, settings.service_database_url, settings.migration_database_url)
    database = make_url(settings.database_url).database if "postgresql" in urls[0] else None
    return database or "herald", roles.roles_from_urls(*urls), urls


def _apply_roles(admin_url: str) -> None:
    from herald.migrations import roles

    database, names, urls = _roles_of_settings()
    roles.apply(
        admin_url,
        database,
        roles.role_statements(database, names, roles.passwords_from_urls(*urls)),
    )
    click.echo(
        f"roles {names.migration} (migration), {names.runtime} (runtime), "
        f"{names.service} (service) ready in database {database}"
    )


# -- Celery processes ------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q",
    "--queues",
    default="default,publish,sweep,tokens,alerts",
    show_default=True,
    help="Comma-separated queues to consume (run separate workers per workload to scale each).",
)
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes or threads.")
@click.option("--pool", default="prefork", show_default=True, help="prefork, threads or solo.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str, concurrency: int | None, pool: str, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker. Extra arguments go to `celery worker` unchanged.

    With HERALD_METRICS_PORT set, the worker serves Prometheus metrics on that port: the
    counts and histograms of the node's every process (multiprocess mode, in a fresh directory
    of its own under HERALD_METRICS_DIR).
    """
    from herald.broker.topology import memory_broker_warning

    settings = get_settings()
    warning = memory_broker_warning(settings)
    if warning:
        click.secho(f"herald worker: WARNING: {warning}", err=True, fg="yellow", bold=True)
    if settings.metrics_port:
        from herald.telemetry.prometheus import use_multiprocess_dir

        # Before anything imports prometheus_client; pool children inherit the variable.
        use_multiprocess_dir(settings, os.environ)
    from herald.celery_app import app

    _serve_metrics(settings)
    argv = ["worker", "--queues", queues, "--pool", pool, "--loglevel", get_settings().log_level]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main([*argv, *celery_args])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat, which enqueues the periodic jobs of herald/beat_schedule.py.

    Run exactly one beat per deployment. With HERALD_METRICS_PORT set it serves the counts of
    the tasks it sent on that port.
    """
    from herald.celery_app import app

    _serve_metrics(get_settings())
    app.start(["beat", "--loglevel", get_settings().log_level, *celery_args])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--address",
    default=None,
    help="Interface to listen on  [default: HERALD_FLOWER_ADDRESS, else 127.0.0.1]",
)
@click.option("--port", type=int, default=5555, show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(address: str | None, port: int, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery monitoring UI, against Herald's broker.

    Requires HERALD_FLOWER_BASIC_AUTH (user:password) outside development. Task events are
    on while Flower runs and switched off when it stops. Extra arguments go to Flower.
    """
    from herald.celery_app import app
    from herald.flower import FlowerNotSecured, run_flower

    settings = get_settings()
    try:
        run_flower(
            app,
            settings,
            address=address or settings.flower_address,
            port=port,
            extra=flower_args,
        )
    except FlowerNotSecured as exc:
        raise click.UsageError(str(exc)) from None


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
    from herald.api.server import server_config
    from herald.telemetry.logging import configure_logging
    from herald.telemetry.tracing import setup_telemetry

    settings = get_settings()
    configure_logging(settings)
    db.get_engine(settings)
    setup_telemetry(settings, engines=db.engines(), component="api")
    uvicorn.Server(server_config(create_app(settings), settings, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--sandbox-port", type=int, default=8765, show_default=True)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("herald-standalone.sqlite3"),
    show_default=True,
)
def standalone(host: str, port: int, sandbox_port: int, database: Path) -> None:
    """API, worker, beat and the provider sandbox in one process, on embedded defaults;
    prints a JWT for a demo user and the curl commands to connect an account and post."""
    from herald.standalone import run

    run(host, port, sandbox_port, database.resolve())


# -- health -------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def health(as_json: bool) -> None:
    """Check Herald's health as GET /api/postiz/monitoring/health does, for every workspace.

    Exits 0 when healthy, 1 when degraded, 2 when unhealthy.
    """
    from herald.beat_schedule import beat_schedule
    from herald.celery_app import QUEUES, broker_connection
    from herald.telemetry.health import check_health
    from herald.telemetry.health_view import render
    from herald.telemetry.state import job_intervals

    settings = get_settings()
    report = check_health(
        settings,
        lambda: broker_connection(settings),
        QUEUES,
        job_intervals(beat_schedule(settings, QUEUES)),
    )
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        render(report)
    sys.exit({"healthy": 0, "degraded": 1, "unhealthy": 2}[report.status])


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


@keys.command("status")
def keys_status() -> None:
    """How many token ciphertexts each key id still holds (the first key seals new ones)."""
    from herald.cli_audit import service_session
    from herald.security.crypto import KeyRing
    from herald.security.rotation import status

    ring = KeyRing.from_settings(get_settings())
    with service_session("cli.keys.status") as session:
        counts = status(session)
    for kid in sorted(ring.key_ids | set(counts), key=lambda k: (k != ring.active, k)):
        marks = " (active)" if kid == ring.active else ""
        marks += "" if kid in ring.key_ids or kid.startswith("(") else " (NOT IN THE RING)"
        click.echo(f"{kid}{marks}: {counts.get(kid, 0)}")


@keys.command("rotate")
@click.option("--batch", type=int, default=None, help="Rows per transaction.")
@click.option("--by", default="cli", show_default=True, help="Who rotates (audited).")
def keys_rotate(batch: int | None, by: str) -> None:
    """Re-seal every token under the first key of HERALD_TOKEN_KEYS. Safe to stop and run
    again (it resumes), and to run while Herald serves: old keys keep opening until removed."""
    from rich.progress import Progress

    from herald.cli_audit import service_session
    from herald.security import audit
    from herald.security.crypto import KeyRing
    from herald.security.rotation import remaining, rotate

    settings = get_settings()
    ring = KeyRing.from_settings(settings)
    with service_session("cli.keys.rotate") as session:
        total = remaining(session, ring)

    def sessions() -> Any:
        return service_session("cli.keys.rotate")

    with Progress() as progress:
        bar = progress.add_task(f"re-sealing under {ring.active}", total=total)
        done = rotate(
            sessions,
            ring,
            batch=batch or settings.key_rotation_batch,
            progress=lambda n: progress.advance(bar, n),
        )
    with service_session("cli.keys.rotate") as session:
        audit.record(
            session,
            audit.EventType.KEY_ROTATION,
            actor=audit.Actor("cli", by),
            severity=audit.Severity.MEDIUM,
            action="keys.rotate",
            message=f"tokens re-sealed under key {ring.active}",
            details={
                "resealed": done.resealed,
                "skipped": done.skipped,
                "unreadable": done.unreadable,
            },
        )
    click.echo(
        f"re-sealed {done.resealed}, changed meanwhile {done.skipped}, unreadable {done.unreadable}"
    )
    if done.unreadable:
        sys.exit(1)


cli.add_command(alerts)
cli.add_command(audit)
cli.add_command(workspaces)
cli.add_command(members)
cli.add_command(integrations)
cli.add_command(webhooks)


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


def _serve_metrics(settings: Settings) -> None:
    """This process's metrics endpoint, or one clear line and exit 1 if its port is taken."""
    from herald.telemetry.prometheus import MetricsPortUnavailable, serve

    try:
        serve(settings)
    except MetricsPortUnavailable as exc:
        raise click.ClickException(str(exc)) from None
