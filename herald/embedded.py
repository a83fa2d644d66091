"""Herald in one process, on embedded defaults: a worker and beat on threads.

The demo (and any single-machine run) uses this: the same Celery app, tasks and beat schedule
as production, with the in-process broker. Nothing here is a second implementation — only a
different way of hosting the real parts.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Protocol, cast

from celery import Celery
from celery.beat import EmbeddedService
from celery.worker import WorkController

from herald.celery_app import QUEUES, celery_config
from herald.settings import Settings, use_settings


class _Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class EmbeddedRuntime:
    """A Celery worker (thread pool) and Celery beat, on threads of this process."""

    def __init__(self, app: Celery, *, concurrency: int = 4, beat: bool = True) -> None:
        self.app = app
        self._state_dir = tempfile.TemporaryDirectory(prefix="herald-beat-")
        self.worker = WorkController(
            app=app,
            hostname="embedded@herald",
            pool_cls="threads",
            concurrency=concurrency,
            queues=list(QUEUES),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        )
        self._worker_thread = threading.Thread(
            target=self.worker.start, name="herald-worker", daemon=True
        )
        # thread=True gives a threading service (the stubs only know the process one).
        self.beat: _Service | None = (
            cast(
                _Service,
                EmbeddedService(
                    app,
                    thread=True,
                    schedule_filename=str(Path(self._state_dir.name) / "celerybeat-schedule"),
                ),
            )
            if beat
            else None
        )

    def start(self) -> EmbeddedRuntime:
        self._worker_thread.start()
        if self.beat is not None:
            self.beat.start()
        return self

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.worker.stop(in_sighandler=False)
        self._worker_thread.join(timeout=30)
        self._state_dir.cleanup()

    def __enter__(self) -> EmbeddedRuntime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def prepare(app: Celery, settings: Settings) -> None:
    """Make ``settings`` this process's (logging, Celery, database engine) and bring its
    database to the newest migration: what a single-process run does before it starts."""
    from herald import db
    from herald.migrations import runner
    from herald.telemetry.logging import configure_logging

    use_settings(settings)
    configure_logging(settings)
    configure_app(app, settings)
    runner.upgrade(settings.database_url)
    db.use_engine(db.engine_for(settings.database_url, settings))


def configure_app(app: Celery, settings: Settings) -> None:
    """Re-apply Herald's Celery configuration from ``settings`` (after ``use_settings``)."""
    app.conf.update(celery_config(settings))
