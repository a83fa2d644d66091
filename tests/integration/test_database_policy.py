"""Herald's connection policy on Postgres (herald/db.py): the application's roles run with the
statement timeout, operator work as the owner without it, a URL's own parameters are kept, a
silent server is given up on in seconds, and a pooled connection the server ended is replaced
before anyone uses it."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from herald import db
from herald.settings import get_settings
from tests.conftest import RUNTIME_DATABASE_URL, TEST_DATABASE_URL
from tests.fixtures.database import show


def test_the_application_roles_have_the_statement_timeout_and_the_owner_has_none(
    service_engine: Engine,
) -> None:
    assert get_settings().database_statement_timeout_s == 30
    assert show(db.get_engine(), "statement_timeout") == "30s"
    assert show(db.get_service_engine(), "statement_timeout") == "30s"
    with db.owner_scope("tests.statement_timeout") as session:  # purges, operator commands
        assert session.execute(text("SHOW statement_timeout")).scalar_one() == "0"


def test_a_urls_own_options_and_connect_timeout_are_kept(service_engine: Engine) -> None:
    url = f"{RUNTIME_DATABASE_URL}?options=-c%20work_mem%3D8MB&connect_timeout=3"
    engine = db.make_engine(url, connect_timeout_s=20, statement_timeout_s=2.5)
    try:
        assert show(engine, "work_mem") == "8MB"
        assert show(engine, "statement_timeout") == "2500ms"
        with engine.connect() as conn:
            parameters = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert parameters["connect_timeout"] == "3"
    finally:
        engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_pooled_connection_the_server_ended_is_replaced_before_use(
    service_engine: Engine,
) -> None:
    engine = db.make_engine(RUNTIME_DATABASE_URL, pool_size=1, max_overflow=0)
    try:
        first = _backend_pid(engine)
        assert _backend_pid(engine) == first  # the pool hands the same connection back
        admin = create_engine(TEST_DATABASE_URL, poolclass=NullPool)
        with admin.begin() as conn:
            # With a timeout it returns once the backend has gone, its goodbye sent: without
            # one it returns at once, and a checkout in between still finds the socket quiet.
            ended = text("SELECT pg_terminate_backend(:pid, 5000)")
            assert conn.execute(ended, {"pid": first}).scalar()
        admin.dispose()
        # No OperationalError for the next user: the ended connection was seen and replaced.
        replaced = _backend_pid(engine)
        assert replaced != first
        assert _backend_pid(engine) == replaced  # and a live one is not replaced
    finally:
        engine.dispose()


def _tcp_options(engine: Engine) -> dict[str, int]:
    """The options the kernel holds for the engine's connection socket."""
    with engine.connect() as conn:
        fd = conn.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            return {
                "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }


def test_a_silent_server_is_given_up_on_within_the_dead_peer_timeout(
    service_engine: Engine,
) -> None:
    """Without these, a host powered off (no FIN, no reset) held a statement for about fifteen
    minutes of retransmissions, and an idle pooled connection for the kernel's two hours before
    the first keepalive probe."""
    assert get_settings().dead_peer_timeout_s == 30
    options = _tcp_options(db.get_engine())
    # Probes from 15 s of silence, 5 s apart, 3 unanswered: gone at 30 s; and data left
    # unacknowledged for 30 s ends the connection.
    assert options == {
        "keepalive": 1,
        "idle": 15,
        "interval": 5,
        "count": 3,
        "user_timeout_ms": 30_000,
    }
    engine = db.make_engine(f"{RUNTIME_DATABASE_URL}?keepalives_idle=100", dead_peer_timeout_s=12)
    try:
        own = _tcp_options(engine)  # the URL's own setting wins; the rest follow the timeout
        assert (own["idle"], own["interval"], own["user_timeout_ms"]) == (100, 2, 12_000)
    finally:
        engine.dispose()
    engine = db.make_engine(RUNTIME_DATABASE_URL, dead_peer_timeout_s=0)
    try:
        assert _tcp_options(engine)["user_timeout_ms"] == 0  # 0: the kernel's defaults
    finally:
        engine.dispose()


def test_a_write_a_read_only_server_refuses_is_an_operational_error_and_drops_the_pool(
    service_engine: Engine,
) -> None:
    """A hot standby's answer to a write (as after a failover while the address still names
    the old primary) is the database being unavailable: tasks retry ``OperationalError`` and
    the API answers it 503; the dropped pool connects anew for the next statement."""
    standby = {"options": "-c default_transaction_read_only=on"}
    engine = db.make_engine(RUNTIME_DATABASE_URL, pool_size=1, connect_args=standby)
    try:
        first = _backend_pid(engine)
        refused = pytest.raises(OperationalError, match="read-only transaction")
        with refused, engine.begin() as conn:
            conn.execute(text("CREATE TEMPORARY TABLE refused (id int)"))
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()


def test_an_errors_text_never_holds_the_statements_parameters(service_engine: Engine) -> None:
    """What a statement was given (post content, a token as written, a webhook secret) stays
    out of the error's text, and so out of every log line, span and stored error made of it."""
    engine = db.make_engine(RUNTIME_DATABASE_URL)
    try:
        failing = text("SELECT 1 / :zero WHERE CAST(:secret AS text) IS NOT NULL")
        with pytest.raises(DBAPIError) as raised, engine.connect() as conn:
            conn.execute(failing, {"zero": 0, "secret": "canary-7f3a9c"})
    finally:
        engine.dispose()
    assert "division by zero" in str(raised.value)
    assert "canary-7f3a9c" not in str(raised.value)
