"""Database access: the engine, sessions, and the tenant and service scopes.

One engine per process, made on first use and dropped after a fork (``dispose_engine`` is
called from Celery's ``worker_process_init``). Tenant isolation on Postgres is row-level
security keyed on ``herald.workspace_id``, which :func:`tenant_scope` sets with ``SET LOCAL``
semantics (``set_config(..., true)``) so it ends with the transaction. SQLite has no RLS: the
same scoping is applied in queries by the callers.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from herald.settings import Settings, get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with Herald's connection policy for ``url`` (Postgres or SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # No ping on every checkout (a round trip per task): connections are recycled instead, and
    # a stale one fails once as OperationalError, which tasks retry (see tasks/publishing.py).
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def get_engine(settings: Settings | None = None) -> Engine:
    global _engine, _sessions  # noqa: PLW0603 - the process-wide engine
    with _lock:
        if _engine is None:
            _engine = make_engine((settings or get_settings()).database_url)
            _sessions = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def use_engine(engine: Engine) -> None:
    """Make ``engine`` the process's engine (tests, the demo)."""
    global _engine, _sessions  # noqa: PLW0603
    with _lock:
        _engine = engine
        _sessions = sessionmaker(engine, expire_on_commit=False)


def dispose_engine() -> None:
    """Forget connections inherited across a fork; the next use reconnects."""
    if _engine is not None:
        _engine.dispose(close=False)


def new_session() -> Session:
    get_engine()
    assert _sessions is not None
    return _sessions()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits if the block succeeds and rolls back if not."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def tenant_scope(session: Session, workspace_id: uuid.UUID | str) -> None:
    """Limit the current transaction to one workspace (RLS on Postgres)."""
    session.info["workspace_id"] = str(workspace_id)
    session.info.pop("service_scope", None)
    if _is_postgres(session):
        session.execute(
            text("SELECT set_config('herald.workspace_id', :ws, true)"), {"ws": str(workspace_id)}
        )


def service_scope(session: Session, reason: str) -> None:
    """Open the current transaction to every workspace, for cross-tenant system work.

    ``reason`` names the job (``dispatch_due``, ``sweep_stuck``…); it is kept on the session so
    the audit log can record each use.
    """
    session.info["service_scope"] = reason
    session.info.pop("workspace_id", None)
    if _is_postgres(session):
        session.execute(text("SELECT set_config('herald.service', 'on', true)"))


# ----------------------------------------------------------------------------------------------
# After-commit hooks: work (such as sending a task) that must happen only once a transaction's
# decision is durable, and never for a transaction that rolled back.
# ----------------------------------------------------------------------------------------------

_AFTER_COMMIT = "herald_after_commit"


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Run ``callback`` after the session's current transaction commits."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop(_AFTER_COMMIT, [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_AFTER_COMMIT, None)
