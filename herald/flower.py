"""Flower for Herald: authenticated, on loopback unless told otherwise, and leaving Celery's
task events as it found them.

Flower shows every task's arguments and can revoke tasks and shut workers down, so
``herald flower`` requires HTTP basic auth (``HERALD_FLOWER_BASIC_AUTH``) outside development
and listens on ``HERALD_FLOWER_ADDRESS`` (default ``127.0.0.1``; Flower's own default is every
interface). With basic auth set, Flower's HTTP API (``/api/...``) takes the same credentials.

Task events cost a broker publish per task state, so Herald's workers start without them
(``HERALD_TASK_EVENTS``). Flower switches them on in every worker while it runs (and again every
few seconds, for workers that start later); when it stops — Ctrl-C, SIGTERM — this module
broadcasts ``disable_events`` so the workers stop sending them, unless ``HERALD_TASK_EVENTS``
asks for events all the time. A Flower that is killed outright (SIGKILL) cannot do that: the
workers keep sending events until they restart or the next Flower exits.

The credentials reach Flower inside this process (its parsed options), never on a command
line another user could read.
"""

from __future__ import annotations

import structlog
from celery import Celery

from herald.settings import Settings

log = structlog.get_logger("herald.flower")


class FlowerNotSecured(Exception):
    """Flower would start without authentication outside development."""


def flower_argv(
    settings: Settings, *, address: str, port: int, extra: tuple[str, ...]
) -> list[str]:
    """The ``celery flower`` arguments for Herald, or :class:`FlowerNotSecured`."""
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if settings.flower_basic_auth is not None:
        argv.append(f"--basic-auth={settings.flower_basic_auth.get_secret_value()}")
    elif settings.env != "development":
        raise FlowerNotSecured(
            "set HERALD_FLOWER_BASIC_AUTH (user:password) to run Flower outside development: "
            "it shows task arguments and can revoke tasks and stop workers"
        )
    else:
        log.warning("flower.unauthenticated", address=address, port=port)
    return [*argv, *extra]


def run_flower(
    app: Celery, settings: Settings, *, address: str, port: int, extra: tuple[str, ...] = ()
) -> None:
    """Run Flower until it stops, then switch the workers' task events off again."""
    argv = flower_argv(settings, address=address, port=port, extra=extra)
    try:
        app.start(argv)
    finally:
        if not settings.task_events:
            app.control.disable_events()
            log.info("flower.events_disabled")
