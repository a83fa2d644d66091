"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from herald.db import make_engine
from herald.migrations import runner
from herald.models import Base


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_postgres_schema_matches_the_models(engine: Engine) -> None:
    assert _diff(engine) == []


def test_sqlite_schema_matches_the_models_and_downgrades_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'herald.sqlite3'}"
    runner.upgrade(url)
    sqlite = make_engine(url)
    try:
        assert _diff(sqlite) == []
        assert set(Base.metadata.tables) <= set(inspect(sqlite).get_table_names())
        runner.downgrade(url, "base")
        assert set(inspect(sqlite).get_table_names()) == {"alembic_version"}
    finally:
        sqlite.dispose()


def test_sqlite_migrations_that_copy_tables_keep_the_rows_that_point_at_them(
    tmp_path: Path,
) -> None:
    """SQLite alters a table by copying it and dropping the old one, and Herald's connections
    enforce foreign keys: dropping ``posts`` deleted every attempt (ON DELETE CASCADE), and
    dropping an ``integrations`` that posts point at failed the upgrade. The embedded default
    (``make demo``'s database) must keep its rows through every migration."""
    url = f"sqlite:///{tmp_path / 'kept.sqlite3'}"
    runner.upgrade(url, "0021")
    sqlite = make_engine(url)
    rows = {
        "workspaces": "INSERT INTO workspaces (id, name, slug, created_at, updated_at) "
        "VALUES ('w1', 'W', 'w', '2026-01-01', '2026-01-01')",
        "integrations": "INSERT INTO integrations (id, workspace_id, provider, "
        "external_account_id, settings, status, access_token_ciphertext, token_key_id, "
        "scopes, token_version, refresh_failure_count, created_at, updated_at) VALUES "
        "('i1', 'w1', 'x', 'a', '{}', 'active', 'c', 'k', '[]', 1, 0, '2026-01-01', "
        "'2026-01-01')",
        "posts": "INSERT INTO posts (id, workspace_id, integration_id, content, media, "
        "provider_settings, scheduled_at, status, attempts, idempotency_key, version, "
        "resolve_attempts, created_at, updated_at) VALUES ('p1', 'w1', 'i1', 'hi', '[]', "
        "'{}', '2026-01-01', 'published', 1, 'k1', 1, 0, '2026-01-01', '2026-01-01')",
        "publish_attempts": "INSERT INTO publish_attempts (id, workspace_id, post_id, "
        "provider, attempt_number, started_at) VALUES ('a1', 'w1', 'p1', 'x', 1, "
        "'2026-01-01')",
    }
    try:
        with sqlite.begin() as conn:
            for statement in rows.values():
                conn.exec_driver_sql(statement)
        runner.upgrade(url)
        counts = _counts(sqlite, rows)
        runner.downgrade(url, "0021")
        back = _counts(sqlite, rows)
    finally:
        sqlite.dispose()
    assert counts == dict.fromkeys(rows, 1)
    assert back == dict.fromkeys(rows, 1)


def _counts(engine: Engine, tables: dict[str, str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in tables
        }
