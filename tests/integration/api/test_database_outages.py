"""The API while its database is away, stuck or restarted: an answer the client can act on (503
with ``Retry-After``, in the one error format), never a 500, never a request held for as long as
the database is, and nothing lost once it is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from herald import db
from herald.api.paths import PREFIX
from herald.models import Post, PostStatus
from tests.conftest import RUNTIME_DATABASE_URL
from tests.fixtures.database import application_engines, service_session, show
from tests.fixtures.polling import eventually
from tests.fixtures.servers import PostgresServer, free_port, silent_server
from tests.integration.api.conftest import Tenant, _tenant, assert_error, schedule_body

#: The longest a test waits for an answer before it calls the request held.
PATIENCE_S = 10.0


def answered_within(
    seconds: float, request: Callable[[], httpx.Response], release: Callable[[], None]
) -> tuple[httpx.Response, float]:
    """``request()``'s answer and how long it took; if none came within ``seconds``, ``release``
    what holds it (so the test ends) and fail."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        future = pool.submit(request)
        try:
            response = future.result(timeout=seconds)
        except FutureTimeout:
            release()
            future.result(timeout=60)
            pytest.fail(f"no answer within {seconds} s: the request waited on the database")
        return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, "database_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


def test_a_request_stuck_behind_a_lock_is_answered_503_within_the_statement_timeout(
    tenant: Tenant, client: TestClient, service_engine: Engine
) -> None:
    post = tenant.post()
    impatient = db.make_engine(RUNTIME_DATABASE_URL, statement_timeout_s=1)
    holder = service_engine.connect()  # another transaction holds the post's row
    holder.execute(select(Post.id).where(Post.id == post.id).with_for_update())
    try:
        with application_engines(impatient):
            response, took = answered_within(
                PATIENCE_S,
                lambda: client.delete(f"{PREFIX}/posts/{post.id}", headers=tenant.headers),
                holder.rollback,
            )
    finally:
        holder.rollback()
        holder.close()
    assert_unavailable(response)
    assert took < 5, took
    with service_session() as s:  # the cancel did not half-happen
        after = s.get(Post, post.id)
        assert after is not None
        assert after.status is PostStatus.SCHEDULED
    # Once the lock is gone the same request goes through.
    again = client.delete(f"{PREFIX}/posts/{post.id}", headers=tenant.headers)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"


def test_a_database_that_refuses_connections_is_answered_503_and_creates_nothing(
    tenant: Tenant, client: TestClient
) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    body = schedule_body(tenant)
    with application_engines(db.make_engine(dead)):
        listed = client.get(f"{PREFIX}/posts", headers=tenant.headers)
        created = client.post(f"{PREFIX}/posts", json=body, headers=tenant.headers)
    assert_unavailable(listed)
    assert_unavailable(created)
    assert "Traceback" not in created.text
    # Back: the client's retry of the same request creates the post, once.
    retried = client.post(f"{PREFIX}/posts", json=body, headers=tenant.headers)
    assert retried.status_code == 201, retried.text
    with service_session() as s:
        keys = s.scalars(
            select(Post.idempotency_key).where(Post.workspace_id == tenant.workspace.id)
        )
        assert list(keys).count(body["idempotency_key"]) == 1


def test_a_database_host_that_never_answers_is_given_up_after_the_connect_timeout(
    tenant: Tenant, client: TestClient
) -> None:
    with silent_server() as (port, end):
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"
        with application_engines(db.make_engine(url, connect_timeout_s=2)):
            response, took = answered_within(
                PATIENCE_S,
                lambda: client.get(f"{PREFIX}/posts", headers=tenant.headers),
                end,
            )
    assert_unavailable(response)
    assert took < 6, took


@pytest.mark.slow
def test_after_a_postgres_restart_the_next_requests_are_served(
    private_postgres: PostgresServer, client: TestClient
) -> None:
    engine = db.make_engine(private_postgres.url)
    with application_engines(engine, engine):
        tenant = _tenant()
        before = client.get(f"{PREFIX}/posts", headers=tenant.headers)
        assert before.status_code == 200, before.text
        private_postgres.restart()  # every pooled connection is now dead
        answers: list[Any] = [
            client.get(f"{PREFIX}/posts", headers=tenant.headers),
            client.post(f"{PREFIX}/posts", json=schedule_body(tenant), headers=tenant.headers),
            client.get(f"{PREFIX}/posts", headers=tenant.headers),
        ]
        statuses = [answer.status_code for answer in answers]
        assert statuses == [200, 201, 200], [answer.text for answer in answers]
        assert len(answers[2].json()["items"]) == 1
        assert uuid.UUID(answers[1].json()["id"])


def _set_read_only(url: str, read_only: bool) -> None:
    """Make the server's new transactions read-only, as a hot standby's are, or writable."""
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER SYSTEM SET default_transaction_read_only = {read_only}"))
            conn.execute(text("SELECT pg_reload_conf()"))
        expected = "on" if read_only else "off"
        eventually(
            lambda: show(admin, "default_transaction_read_only") == expected,
            what=f"default_transaction_read_only to be {expected}",
        )
    finally:
        admin.dispose()


@pytest.mark.slow
def test_a_database_that_turned_read_only_is_answered_503_and_writes_resume_after_it(
    private_postgres: PostgresServer, client: TestClient
) -> None:
    """As after a failover while the database's address still names the old primary, now a
    standby: every write fails with ``read_only_sql_transaction``. That answered 500 with a
    traceback; it is the database being unavailable for writes, so 503 with Retry-After, and
    the pool is dropped so that the next connection is made anew (to the new primary, once
    the address names it). Reads are still served."""
    engine = db.make_engine(private_postgres.url)
    with application_engines(engine, engine):
        tenant = _tenant()
        body = schedule_body(tenant)
        _set_read_only(private_postgres.url, True)
        try:
            engine.dispose()  # the pooled connections read the setting at their next start
            refused = client.post(f"{PREFIX}/posts", json=body, headers=tenant.headers)
            listed = client.get(f"{PREFIX}/posts", headers=tenant.headers)
        finally:
            _set_read_only(private_postgres.url, False)
        created = client.post(f"{PREFIX}/posts", json=body, headers=tenant.headers)

    assert_unavailable(refused)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    assert created.status_code == 201, created.text
