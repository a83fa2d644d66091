"""Alembic environment: Herald's metadata, its database URL, Postgres and SQLite alike."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from herald.db import make_engine
from herald.models import Base
from herald.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite alters a table by copying it and dropping the old one; with foreign keys
        # enforced (as Herald's connections are), the drop deletes the rows that point at the
        # table (ON DELETE CASCADE) or fails. Off for the migrations (it cannot change inside a
        # transaction), checked before they commit, on again after.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,  # SQLite alters by table copy
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows without their parent: {broken}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    settings = get_settings()
    url = (
        config.get_main_option("sqlalchemy.url")
        or settings.migration_database_url
        or settings.database_url
    )
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def run_offline() -> None:
    settings = get_settings()
    url = (
        config.get_main_option("sqlalchemy.url")
        or settings.migration_database_url
        or settings.database_url
    )
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
