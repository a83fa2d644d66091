"""The ``herald`` command. Run ``herald --help``, or ``herald COMMAND --help`` for one command."""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from herald.cli_alerts import alerts
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


cli.add_command(alerts)


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
