"""Single-flight refresh: N refreshes of one integration at once make one call to a network
that rotates refresh tokens and revokes the whole family when a spent one is reused (X, in the
sandbox) — with threads on Postgres and on the embedded SQLite. Worker processes racing:
test_worker_process.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from herald import db
from herald.migrations import runner
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.connect import account_from, connect_integration, tokens_from
from herald.tokens.refresh import RefreshOutcome, refresh_integration
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_workspace
from tests.fixtures.publishing import ConnectFn
from tests.integration.tokens.support import (
    assert_one_refresh,
)


def refresh_at_once(
    integration_id: uuid.UUID,
    settings: Settings,
    keys: KeyRing,
    *,
    count: int,
    seen_version: int | None,
) -> list[RefreshOutcome]:
    """``count`` refreshes of one integration on as many threads, released together."""
    start = threading.Barrier(count)
    results: list[RefreshOutcome] = []
    errors: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            with service_session() as s:
                results.append(
                    refresh_integration(
                        s, integration_id, settings, keys, seen_version=seen_version
                    )
                )
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_two_refreshes_at_once_with_seen_token_version_call_the_network_once(
    connect: ConnectFn, sandbox: SandboxClient, pub_settings: Settings, keys: KeyRing
) -> None:
    integration = connect("x")
    sandbox.inject("x", "latency", ms=300, path="oauth2/token")
    results = refresh_at_once(
        integration.id, pub_settings, keys, count=2, seen_version=integration.token_version
    )
    assert sorted(r.outcome for r in results) == ["lost_race", "refreshed"]
    assert_one_refresh(sandbox, integration, 2)


def test_eight_refreshes_at_once_on_postgres_threads_call_the_network_once(
    connect: ConnectFn, sandbox: SandboxClient, pub_settings: Settings, keys: KeyRing
) -> None:
    integration = connect("x")
    sandbox.inject("x", "latency", ms=300, path="oauth2/token")
    refresh_at_once(
        integration.id, pub_settings, keys, count=8, seen_version=integration.token_version
    )
    assert_one_refresh(sandbox, integration, 8)


@pytest.fixture
def sqlite_engine(engine: Engine, service_engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """The embedded default for the duration of a test: a migrated SQLite file as the
    process's database (the run's Postgres engine is put back afterwards)."""
    url = f"sqlite:///{tmp_path / 'herald.sqlite3'}"
    runner.upgrade(url)
    sqlite = db.make_engine(url)
    db.use_engine(sqlite)
    yield sqlite
    db.use_engine(engine, service_engine)
    sqlite.dispose()


def test_eight_refreshes_at_once_on_sqlite_threads_call_the_network_once(
    sqlite_engine: Engine, sandbox: SandboxClient, pub_settings: Settings, keys: KeyRing
) -> None:
    created = sandbox.create_account("x")
    with service_session() as s:
        workspace = make_workspace(s)
        integration = connect_integration(
            s,
            workspace_id=workspace.id,
            provider="x",
            account=account_from(created),
            tokens=tokens_from(created),
            keys=keys,
        )
    sandbox.inject("x", "latency", ms=300, path="oauth2/token")
    refresh_at_once(
        integration.id, pub_settings, keys, count=8, seen_version=integration.token_version
    )
    assert_one_refresh(sandbox, integration, 8)
