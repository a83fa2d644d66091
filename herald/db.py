"""Database access: the engines, sessions, and the tenant and service scopes.

Two engines per process, made on first use and dropped after a fork (``dispose_engine`` is
called from Celery's ``worker_process_init``): the **runtime** engine (``database_url``) and
the **service** engine (``service_database_url``; the runtime one when unset).

This module is the one place that owns tenant isolation. Every session starts unscoped, and
an unscoped session sees no tenant row. :func:`tenant_scope` limits a transaction to one
workspace; :func:`service_scope` opens it to every workspace for cross-tenant system work.

- **Postgres**: row-level security (herald/migrations/rls.py). ``tenant_scope`` binds the
  session to the runtime engine and sets ``herald.workspace_id`` with ``set_config(..., true)``
  (``SET LOCAL``: it ends with the transaction; the ``after_begin`` hook below sets it again in
  each later transaction of the session, one statement per transaction). ``service_scope``
  binds the session to the service engine, whose role has ``BYPASSRLS``: no setting opens RLS.
- **SQLite**: no RLS, so the session itself scopes. Every ORM statement gets a
  ``with_loader_criteria`` on each mapped class with a ``workspace_id`` column (and on
  ``workspaces`` by ``id``), and a flush refuses a row for another workspace
  (:class:`TenantScopeError`).

A scope is chosen before the transaction's first statement (a tenant scope may also narrow a
transaction already under way on the runtime engine): changing engines mid-transaction would
split it in two, so it raises :class:`TenantScopeError` instead.
"""

from __future__ import annotations

import os
import select
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import structlog
from sqlalchemy import create_engine, event, false, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    sessionmaker,
    with_loader_criteria,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from herald.settings import Settings, get_settings, keepalive_probes

_log = structlog.get_logger("herald.db")
T = TypeVar("T")

_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    # A thread of the parent (the worker's orphan watch) may have held the lock at the fork;
    # the child's copy would then stay locked for ever.
    global _lock  # noqa: PLW0603
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)
_engine: Engine | None = None
_service_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None

# Keys of ``Session.info``.
_WORKSPACE = "workspace_id"
_SERVICE = "service_scope"
_ENGINE_IN_USE = "herald_engine_in_use"  # the engine of the current transaction's connection


class TenantScopeError(RuntimeError):
    """A write outside the session's workspace, or a scope changed mid-transaction."""


#: libpq's ``connect_timeout`` when neither the URL nor the caller sets one (psycopg's own
#: default is 130 s: a database host that accepts and then says nothing held a request or a
#: task that long).
CONNECT_TIMEOUT_S = 10

#: How long a connection whose server has gone silent (a host powered off, a network path
#: cut: no FIN, no reset) is kept before it fails, when neither the URL nor the caller says.
#: The kernel's defaults keep it for hours: keepalive probes start after two hours of
#: silence, and a statement sent into the void is retransmitted for about fifteen minutes.
DEAD_PEER_TIMEOUT_S = 30


def make_engine(
    url: str,
    *,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    statement_timeout_s: float = 0,
    dead_peer_timeout_s: int = DEAD_PEER_TIMEOUT_S,
    **kwargs: Any,
) -> Engine:
    """An engine with Herald's connection policy for ``url`` (Postgres or SQLite).

    On Postgres: connecting gives up after ``connect_timeout_s`` (unless the URL sets
    ``connect_timeout``); each statement is cancelled by the server after
    ``statement_timeout_s`` (0: never; added to the URL's own ``options``), so a statement
    waiting on a lock or a plan gone wrong ends as ``OperationalError`` instead of holding its
    caller; a connection whose server went silent fails within about ``dead_peer_timeout_s``
    (0: the kernel's defaults; :func:`_dead_peer_limits`); a pooled connection the server has
    ended meanwhile is replaced before it is handed out (:func:`_check_idle_connections`).
    """
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
    # No ping on every checkout (a round trip per task): a connection the server ended is seen
    # without one (below), the rest are recycled; one lost silently fails once as
    # OperationalError, which tasks retry (see tasks/publishing.py) and the API answers 503.
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    # A statement's parameters (post content, tokens as written, webhook secrets) never reach
    # an error's text, so never a log line, a span or a stored error either.
    kwargs.setdefault("hide_parameters", True)
    kwargs["connect_args"] = {
        **_postgres_limits(url, connect_timeout_s, statement_timeout_s),
        **_dead_peer_limits(url, dead_peer_timeout_s),
        **kwargs.get("connect_args", {}),
    }
    engine = create_engine(url, **kwargs)
    _check_idle_connections(engine)
    _standby_is_unavailable(engine)
    return engine


def engine_for(url: str, settings: Settings) -> Engine:
    """An engine for one of the application's roles (runtime or service), with the settings'
    connect and statement timeouts. Migrations and operator commands use :func:`make_engine`
    without a statement timeout: a migration may rightly run for long."""
    return make_engine(
        url,
        connect_timeout_s=settings.database_connect_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
        dead_peer_timeout_s=settings.dead_peer_timeout_s,
    )


def _postgres_limits(
    url: str, connect_timeout_s: int, statement_timeout_s: float
) -> dict[str, Any]:
    """libpq connection parameters for the timeouts, keeping what the URL itself says."""
    query = make_url(url).query
    limits: dict[str, Any] = {}
    if "connect_timeout" not in query:
        limits["connect_timeout"] = connect_timeout_s
    if statement_timeout_s > 0:
        given = query.get("options", "")
        options = " ".join(given) if isinstance(given, tuple) else given
        milliseconds = max(1, round(statement_timeout_s * 1000))
        limits["options"] = f"{options} -c statement_timeout={milliseconds}".strip()
    return limits


def _dead_peer_limits(url: str, dead_peer_timeout_s: int) -> dict[str, Any]:
    """libpq's TCP parameters that make a silent server fail a connection within about
    ``dead_peer_timeout_s``, keeping any the URL sets (libpq ignores them on a Unix socket).

    - Waiting for an answer, nothing unacknowledged: unanswered keepalive probes
      (:func:`herald.settings.keepalive_probes`) end the connection.
    - A statement sent and never acknowledged: ``tcp_user_timeout`` ends it after the time.

    A live server acknowledges both at the kernel level, so a statement that rightly runs for
    long (a migration, a purge) is not cut short: only ``statement_timeout`` limits that.
    """
    if dead_peer_timeout_s <= 0:
        return {}
    query = make_url(url).query
    idle, interval, count = keepalive_probes(dead_peer_timeout_s)
    wanted = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": dead_peer_timeout_s * 1000,
    }
    return {name: value for name, value in wanted.items() if name not in query}


def _check_idle_connections(engine: Engine) -> None:
    """Before a pooled connection is handed out, look (without a round trip) whether the server
    has said something on it since it went idle. An idle connection has nothing to read unless
    the server ended it: a restart, a failover, ``pg_terminate_backend``, an idle timeout all
    send a goodbye or close the socket. Such a connection is pinged, and the pool connects
    again when the ping fails, so the first request after a restart is served rather than
    failed. A connection the network lost without a word is not seen here unless the kernel
    has given up on it already (:func:`_dead_peer_limits`): its statement fails as
    ``OperationalError`` within the dead-peer timeout (tasks retry it, the API answers 503)
    and SQLAlchemy then drops the whole pool."""

    @event.listens_for(engine, "checkout")
    def _alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if not _server_spoke(dbapi_connection):
            return
        try:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True  # one round trip, no transaction left behind
            try:
                dbapi_connection.execute("SELECT 1")
            finally:
                dbapi_connection.autocommit = autocommit
        except Exception as exc:
            # The pool drops this connection and hands out a fresh one (or raises if the
            # database cannot be reached at all).
            raise DisconnectionError(f"a pooled connection was ended by the server: {exc}") from exc


def _standby_is_unavailable(engine: Engine) -> None:
    """A write refused because the server is read-only (``read_only_sql_transaction``: a hot
    standby, as after a failover while the database's address still names the old primary)
    is the database being unavailable, not a bug: it is raised as ``OperationalError``, which
    tasks retry and the API answers 503, and the pool is dropped, so the next connection is
    made anew and reaches the new primary as soon as the address names it."""

    @event.listens_for(engine, "handle_error")
    def _read_only(context: ExceptionContext) -> OperationalError | None:
        original = context.original_exception
        if not isinstance(original, psycopg.errors.ReadOnlySqlTransaction):
            return None
        context.is_disconnect = True
        return OperationalError(
            context.statement,
            context.parameters,
            original,
            hide_parameters=context.engine is None or context.engine.hide_parameters,
        )


def _server_spoke(dbapi_connection: Any) -> bool:
    """Whether an idle psycopg connection has bytes (or end of file) waiting to be read."""
    try:
        fd = dbapi_connection.pgconn.socket
    except Exception:  # closed already: psycopg knows it is dead
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def get_engine(settings: Settings | None = None) -> Engine:
    """The runtime engine (requests and tenant-scoped work)."""
    global _engine, _service_engine, _sessions  # noqa: PLW0603 - the process-wide engines
    with _lock:
        if _engine is None:
            settings = settings or get_settings()
            _engine = engine_for(settings.database_url, settings)
            service_url = settings.service_database_url
            if service_url and service_url != settings.database_url:
                _service_engine = engine_for(service_url, settings)
            else:
                _service_engine = _engine
            _sessions = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def get_service_engine() -> Engine:
    """The service engine (cross-workspace jobs); the runtime engine when none is configured."""
    get_engine()
    assert _service_engine is not None
    return _service_engine


def engines() -> tuple[Engine, ...]:
    """The process's engines: the runtime one, and the service one when it is another."""
    runtime, service = get_engine(), get_service_engine()
    return (runtime,) if service is runtime else (runtime, service)


def use_engine(engine: Engine, service: Engine | None = None) -> None:
    """Make ``engine`` the process's runtime engine and ``service`` (default: the same) its
    service engine (tests, the demo)."""
    global _engine, _service_engine, _sessions  # noqa: PLW0603
    with _lock:
        _engine = engine
        _service_engine = service or engine
        _sessions = sessionmaker(engine, expire_on_commit=False)


def dispose_engine() -> None:
    """Forget connections inherited across a fork; the next use reconnects."""
    for engine in {_engine, _service_engine}:
        if engine is not None:
            engine.dispose(close=False)


def new_session() -> Session:
    get_engine()
    assert _sessions is not None
    return _sessions()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits if the block succeeds and rolls back if not."""
    with _committed(new_session()) as session:
        yield session


@contextmanager
def _committed(session: Session) -> Iterator[Session]:
    """``session``, committed if the block succeeds, rolled back if not, closed either way."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ----------------------------------------------------------------------------------------------
# Scopes
# ----------------------------------------------------------------------------------------------


def _use(session: Session, engine: Engine) -> None:
    """Bind ``session`` to ``engine`` for its next transaction."""
    if session.bind is not _engine and session.bind is not _service_engine:
        return  # bound by its creator to one connection or another database: that is its own
    in_use = session.info.get(_ENGINE_IN_USE)
    if in_use is not None and in_use is not engine:
        raise TenantScopeError(
            "a transaction's scope is chosen before its first statement: commit or roll back "
            "first, or open the scope at the start"
        )
    session.bind = engine


def tenant_scope(session: Session, workspace_id: uuid.UUID | str) -> None:
    """Limit the session to one workspace (RLS on Postgres, query criteria on SQLite)."""
    workspace = str(uuid.UUID(str(workspace_id)))  # a malformed id raises ValueError here
    _use(session, get_engine())
    session.info[_WORKSPACE] = workspace
    session.info.pop(_SERVICE, None)
    if session.info.get(_ENGINE_IN_USE) is not None:  # the transaction has begun: set it now
        _set_workspace(session.connection(), workspace)


def service_scope(session: Session, reason: str) -> None:
    """Open the session to every workspace, for cross-tenant system work.

    ``reason`` names the job (``dispatch_due``, ``sweep_stuck``…); it is kept on the session so
    the audit log can record each use.
    """
    _use(session, get_service_engine())
    session.info[_SERVICE] = reason
    session.info.pop(_WORKSPACE, None)


@contextmanager
def owner_scope(reason: str) -> Iterator[Session]:
    """A committed transaction as the tables' owner (``migration_database_url``; the runtime URL
    when unset), open to every workspace: for the operator commands that do what the runtime and
    service roles may not, such as the audit log's purge. Its own engine, disposed at the end."""
    settings = get_settings()
    engine = make_engine(
        settings.migration_database_url or settings.database_url,
        dead_peer_timeout_s=settings.dead_peer_timeout_s,
    )
    session = Session(engine, expire_on_commit=False)
    session.info[_SERVICE] = reason
    try:
        with _committed(session):
            yield session
    finally:
        engine.dispose()


def autocommit(session: Session) -> bool:
    """Run the session's next transaction in autocommit, each statement committed on its own,
    on one connection until the transaction ends (the publish path's single statements:
    herald/publishing/fastpath.py). Only on Postgres, in the service scope (a tenant scope's
    ``SET LOCAL`` needs a transaction), for a session bound to an engine and with no transaction
    under way; returns whether it did."""
    bind = session.bind
    if (
        session.info.get(_SERVICE) is None
        or session.in_transaction()
        or not isinstance(bind, Engine)
        or bind.dialect.name != "postgresql"
    ):
        return False
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return True


def current_workspace(session: Session) -> str | None:
    """The workspace ``session`` is limited to, if any."""
    workspace = session.info.get(_WORKSPACE)
    return workspace if isinstance(workspace, str) else None


def _set_workspace(connection: Connection, workspace: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT set_config('herald.workspace_id', :ws, true)"), {"ws": workspace}
        )


@event.listens_for(Session, "after_begin")
def _scope_transaction(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    session.info[_ENGINE_IN_USE] = connection.engine
    workspace = session.info.get(_WORKSPACE)
    if workspace is not None:
        _set_workspace(connection, workspace)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_ENGINE_IN_USE, None)


# SQLite: the scope applied to every ORM statement and checked on every flush.


def _is_sqlite(session: Session) -> bool:
    bind = session.bind
    return bind is not None and bind.dialect.name == "sqlite"


_tenant_classes: dict[int, list[tuple[type[Any], str]]] = {}


def _tenant_columns(mapper: Mapper[Any]) -> list[tuple[type[Any], str]]:
    """Every mapped class of ``mapper``'s registry with its workspace key attribute."""
    registry = mapper.registry
    found = _tenant_classes.get(id(registry))
    if found is None:
        found = []
        for each in registry.mappers:
            table = getattr(each.local_table, "name", None)
            if "workspace_id" in each.columns:
                found.append((each.class_, "workspace_id"))
            elif table == "workspaces":
                found.append((each.class_, "id"))
        _tenant_classes[id(registry)] = found
    return found


def _criteria(cls: type[Any], key: str, workspace: str | None) -> Any:
    if workspace is None:
        return with_loader_criteria(cls, false(), include_aliases=True)
    value = uuid.UUID(workspace)
    return with_loader_criteria(cls, getattr(cls, key) == value, include_aliases=True)


@event.listens_for(Session, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    session = state.session
    if session.info.get(_SERVICE) is not None or not _is_sqlite(session):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper or next(iter(state.all_mappers), None)
    if mapper is None:
        return
    workspace = current_workspace(session)
    state.statement = state.statement.options(
        *(_criteria(cls, key, workspace) for cls, key in _tenant_columns(mapper))
    )


@event.listens_for(Session, "before_flush")
def _check_writes(session: Session, flush: UOWTransaction, instances: object) -> None:
    if session.info.get(_SERVICE) is not None or not _is_sqlite(session):
        return
    workspace = current_workspace(session)
    for obj in (*session.new, *session.dirty):
        table = getattr(type(obj), "__table__", None)
        key = "id" if getattr(table, "name", None) == "workspaces" else "workspace_id"
        if table is None or key not in table.c:
            continue
        value = getattr(obj, key)
        if value is None and obj in session.new and getattr(type(obj), "__append_only__", False):
            continue  # an append-only log takes rows of no workspace from any scope
        if value is None or str(value) != workspace:
            raise TenantScopeError(
                f"a {type(obj).__name__} row of workspace {value} refused: the session is "
                f"limited to {workspace or 'no workspace'}"
            )


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


# ----------------------------------------------------------------------------------------------
# Writes that must outlive a lost connection: what the network answered (a publish, a token
# rotation) exists nowhere else, so its write is retried on a fresh connection, never the call.
# ----------------------------------------------------------------------------------------------


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error that a fresh connection may not repeat."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def roll_back(session: Session) -> None:
    """Roll ``session`` back, even when its connection is gone (the session then forgets the
    transaction and checks out a new connection on its next use)."""
    try:
        session.rollback()
    except SQLAlchemyError:
        _log.debug("db.rollback_failed")


def write_durably(
    session: Session, write: Callable[[], T], *, attempts: int, retry_event: str
) -> T:
    """Run ``write`` (which commits) until it succeeds, rolling back between tries; re-raise
    the last database error after ``attempts`` tries (each retry logged as ``retry_event``). Other
    errors are not retried. Every such write must be safe to repeat: a commit whose reply was
    lost may have landed (a conditional UPDATE applies once)."""

    def start_over(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(retry_event, attempt=state.attempt_number, error=type(error).__name__)

    retrying = Retrying(
        retry=retry_if_exception(lost_connection),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.2, max=2.0),
        before_sleep=start_over,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            try:
                return write()
            except BaseException:
                roll_back(session)
                raise
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
