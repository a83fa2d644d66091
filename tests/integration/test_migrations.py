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
