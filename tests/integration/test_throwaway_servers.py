"""The servers a fresh machine's `make test` starts when none answers (tests/conftest.py):
they must come up, serve, and leave nothing behind."""

from __future__ import annotations

import psycopg

from tests.fixtures.servers import PostgresServer, answers


def test_a_throwaway_postgres_serves_a_database_and_leaves_nothing_behind() -> None:
    server = PostgresServer()
    try:
        assert answers(server.url, 5432)
        with psycopg.connect(server.url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "herald_test_throwaway"')
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", ["herald_test_throwaway"]
            )
            assert found.fetchone() == (1,)
    finally:
        server.close()
    assert not answers(server.url, 5432)
    assert not server.dir.exists()
