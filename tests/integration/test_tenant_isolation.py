"""Tenant isolation, the same matrix on both databases.

Postgres: as the runtime role (row-level security, herald/migrations/rls.py), for every tenant
table found in the catalog. SQLite: through the ORM session's query scoping (herald/db.py), for
every mapped class with a ``workspace_id``. Workspace A never sees, changes or deletes a row
of workspace B, nor writes a row for B; with no workspace set nothing is visible.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import (
    Column,
    Table,
    Uuid,
    and_,
    create_engine,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from herald import db
from herald.cli import cli
from herald.migrations import runner
from herald.models import Base
from tests.conftest import ROLE_NAMES, TEST_DATABASE_URL

Row = dict[str, Any]


# -- one valid row per table, for a given workspace ----------------------------------------------


def _synthetic(column: Column[Any]) -> Any:
    kind = column.type
    enum_class = getattr(kind, "enum_class", None)
    if enum_class is not None:
        return next(iter(enum_class))
    python_type = getattr(kind, "impl_instance", kind).python_type
    if python_type is str:
        return uuid.uuid4().hex[: min(getattr(kind, "length", None) or 32, 32)]
    if python_type is int:
        return random.randint(1, 10**6)
    if python_type is datetime:
        return datetime.now(UTC)
    return {
        float: 1.0,
        bool: False,
        dict: {},
        list: [],
        uuid.UUID: uuid.uuid4(),
        bytes: b"x",
    }[python_type]


def _row(table: Table, workspace: uuid.UUID, parents: dict[str, Row]) -> Row:
    values: Row = {}
    for column in table.columns:
        if column.name == "workspace_id" or (table.name == "workspaces" and column.name == "id"):
            values[column.name] = workspace
        elif column.foreign_keys:
            target = next(iter(column.foreign_keys)).column
            if target.table.name in parents:
                values[column.name] = parents[target.table.name][target.name]
        elif column.primary_key and isinstance(column.type, Uuid):
            values[column.name] = uuid.uuid4()
        elif not (
            column.nullable
            or column.default is not None
            or column.server_default
            or column is table.autoincrement_column
        ):
            values[column.name] = _synthetic(column)
    return values


def _seed(conn: Connection, workspace: uuid.UUID) -> dict[str, Row]:
    """One row of every table for ``workspace`` (rows of other tables it needs included)."""
    rows: dict[str, Row] = {}
    for table in Base.metadata.sorted_tables:
        values = _row(table, workspace, rows)
        inserted = conn.execute(insert(table).values(values).returning(*table.columns)).one()
        rows[table.name] = dict(inserted._mapping)
    return rows


def _where(table: Table, row: Row) -> Any:
    return and_(*(column == row[column.name] for column in table.primary_key.columns))


# -- Postgres: the runtime role under row-level security -----------------------------------------

A, B = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(scope="module")
def admin(engine: Engine) -> Iterator[Engine]:
    admin = create_engine(TEST_DATABASE_URL, poolclass=NullPool)
    yield admin
    admin.dispose()


def _catalog(conn: Connection) -> list[tuple[str, bool, bool, bool, int]]:
    """(table, has workspace_id, RLS enabled, RLS forced, policies) for every public table."""
    return [
        tuple(r)
        for r in conn.execute(
            text(
                """
                SELECT c.relname,
                       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                               AND a.attname = 'workspace_id' AND NOT a.attisdropped),
                       c.relrowsecurity, c.relforcerowsecurity,
                       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                ORDER BY c.relname
                """
            )
        )
    ]


@pytest.fixture
def as_runtime(admin: Engine) -> Iterator[tuple[Connection, dict[str, Row], dict[str, Row]]]:
    """Rows of workspaces A and B seeded, then the transaction continues as the runtime role
    (rolled back at the end: nothing outlives the test)."""
    with admin.connect() as conn:
        transaction = conn.begin()
        rows_a, rows_b = _seed(conn, A), _seed(conn, B)
        conn.execute(text(f'SET LOCAL ROLE "{ROLE_NAMES["runtime"]}"'))
        yield conn, rows_a, rows_b
        transaction.rollback()


def _tenant_tables(conn: Connection) -> list[Table]:
    found = [name for name, has_ws, enabled, *_ in _catalog(conn) if has_ws or enabled]
    assert found, "no tenant table found in the catalog"
    return [Base.metadata.tables[name] for name in found]


def _refused(conn: Connection, statement: Any) -> bool:
    savepoint = conn.begin_nested()
    try:
        conn.execute(statement)
    except (ProgrammingError, DBAPIError) as exc:
        savepoint.rollback()
        return "row-level security" in str(exc) or "permission denied" in str(exc)
    savepoint.rollback()
    return False


def _changed(conn: Connection, statement: Any) -> int:
    """Rows ``statement`` changed; 0 when the role may not run it at all (append-only)."""
    savepoint = conn.begin_nested()
    try:
        count = conn.execute(statement).rowcount
    except ProgrammingError as exc:
        savepoint.rollback()
        if "permission denied" not in str(exc):
            raise
        return 0
    savepoint.commit()
    return count


def test_every_table_with_a_workspace_id_has_rls_enabled_and_forced_with_a_policy(
    admin: Engine,
) -> None:
    with admin.connect() as conn:
        catalog = _catalog(conn)
    tenant = [row for row in catalog if row[1]]
    assert len(tenant) >= 10
    unprotected = [
        name
        for name, _, enabled, forced, policies in tenant
        if not (enabled and forced and policies)
    ]
    assert unprotected == [], f"tables with workspace_id but no forced RLS policy: {unprotected}"


def test_workspace_a_cannot_see_change_delete_or_create_rows_of_workspace_b(
    as_runtime: tuple[Connection, dict[str, Row], dict[str, Row]],
) -> None:
    conn, rows_a, rows_b = as_runtime
    conn.execute(text("SELECT set_config('herald.workspace_id', :ws, true)"), {"ws": str(A)})
    for table in _tenant_tables(conn):
        mine, theirs = rows_a[table.name], rows_b[table.name]
        seen = conn.execute(select(table).where(_where(table, theirs))).all()
        assert seen == [], table.name
        assert conn.execute(select(table).where(_where(table, mine))).all(), table.name
        key = next(iter(table.primary_key.columns))
        changed = _changed(conn, update(table).where(_where(table, theirs)).values({key: key}))
        assert changed == 0, table.name
        assert _changed(conn, delete(table).where(_where(table, theirs))) == 0, table.name
        parents = {**rows_b, table.name: {}}
        assert _refused(conn, insert(table).values(_row(table, B, parents))), table.name
        if "workspace_id" in table.c:  # nor may A hand one of its rows over to B
            moved = update(table).where(_where(table, mine)).values(workspace_id=B)
            assert _refused(conn, moved), table.name


#: Rows of one workspace that point at another tenant table's row: the pointer must stay in the
#: workspace. (An alert may belong to a workspace and name a built-in rule of none.)
CROSS_POINTERS = [
    ("posts", "integration_id", "integrations"),
    ("publish_attempts", "post_id", "posts"),
    ("post_media_uploads", "post_id", "posts"),
    ("post_metrics", "post_id", "posts"),
    ("token_refresh_attempts", "integration_id", "integrations"),
    ("webhook_deliveries", "subscription_id", "webhook_subscriptions"),
]


def test_every_pointer_between_tenant_tables_is_listed() -> None:
    pointers = {
        (table.name, fk.parent.name, fk.column.table.name)
        for table in Base.metadata.sorted_tables
        if "workspace_id" in table.c
        for fk in table.foreign_keys
        if fk.parent.name != "workspace_id" and "workspace_id" in fk.column.table.c
    }
    assert pointers - {("alerts", "rule_id", "alert_rules")} == set(CROSS_POINTERS)


def test_a_row_of_workspace_a_cannot_point_at_a_row_of_workspace_b(
    as_runtime: tuple[Connection, dict[str, Row], dict[str, Row]],
) -> None:
    """Row-level security checks a row's own workspace_id; the foreign key must hold the rest.
    Before, A's post could be moved onto B's integration (and was then published with B's
    tokens) and A could queue a delivery to B's webhook subscription, signed with B's secret."""
    conn, rows_a, rows_b = as_runtime
    conn.execute(text("SELECT set_config('herald.workspace_id', :ws, true)"), {"ws": str(A)})
    for name, column, parent in CROSS_POINTERS:
        table = Base.metadata.tables[name]
        theirs = rows_b[parent]["id"]
        moved = update(table).where(_where(table, rows_a[name])).values({column: theirs})
        assert _violates_a_foreign_key(conn, moved), name
        fresh = _row(table, A, {**rows_a, parent: rows_b[parent], name: {}})
        assert _violates_a_foreign_key(conn, insert(table).values(fresh)), name


def _violates_a_foreign_key(conn: Connection, statement: Any) -> bool:
    savepoint = conn.begin_nested()
    try:
        conn.execute(statement)
    except IntegrityError as exc:
        savepoint.rollback()
        return "foreign key" in str(exc)
    savepoint.rollback()
    return False


def test_without_a_workspace_nothing_is_visible_and_no_setting_opens_it(
    as_runtime: tuple[Connection, dict[str, Row], dict[str, Row]],
) -> None:
    conn, _, _ = as_runtime
    conn.execute(text("SET LOCAL herald.service = 'on'"))  # the old escape hatch opens nothing
    for table in _tenant_tables(conn):
        assert conn.execute(select(table)).all() == [], table.name
    conn.execute(text("SELECT set_config('herald.workspace_id', '', true)"))
    for table in _tenant_tables(conn):
        assert conn.execute(select(table)).all() == [], table.name


def test_the_application_runs_as_the_runtime_role_and_its_jobs_as_the_service_role() -> None:
    with db.session_scope() as session:
        role, bypass = session.execute(
            text("SELECT current_user, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        assert (role, bypass) == (ROLE_NAMES["runtime"], False)
        owned = session.scalar(
            text("SELECT count(*) FROM pg_tables WHERE tableowner = current_user")
        )
        assert owned == 0
        # ...and cannot become the service role (no membership: SET ROLE is refused).
        assert _refused(session.connection(), text(f'SET ROLE "{ROLE_NAMES["service"]}"'))
    with db.session_scope() as session:
        db.service_scope(session, "test")
        assert session.scalar(text("SELECT current_user")) == ROLE_NAMES["service"]


# -- SQLite: the session scopes every ORM statement ----------------------------------------------


@pytest.fixture(scope="module")
def sqlite(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Engine, dict[str, Row], dict[str, Row]]]:
    path: Path = tmp_path_factory.mktemp("tenancy") / "herald.sqlite3"
    engine = db.make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:  # Core statements: seeding is not scoped
        rows_a, rows_b = _seed(conn, A), _seed(conn, B)
    yield engine, rows_a, rows_b
    engine.dispose()


def _tenant_classes() -> list[type[Any]]:
    classes = [
        m.class_
        for m in Base.registry.mappers
        if "workspace_id" in m.local_table.c or m.local_table.name == "workspaces"
    ]
    assert len(classes) >= 10
    return classes


def test_sqlite_workspace_a_cannot_see_change_delete_or_create_rows_of_workspace_b(
    sqlite: tuple[Engine, dict[str, Row], dict[str, Row]],
) -> None:
    engine, rows_a, rows_b = sqlite
    with engine.connect() as conn, Session(bind=conn) as session:
        db.tenant_scope(session, A)
        for cls in _tenant_classes():
            table = cls.__table__
            mine, theirs = rows_a[table.name], rows_b[table.name]
            assert session.scalars(select(cls).where(_where(table, theirs))).all() == []
            assert session.scalars(select(cls).where(_where(table, mine))).all(), table.name
            assert {
                str(getattr(o, "workspace_id", None) or o.id) for o in session.scalars(select(cls))
            } == {str(A)}
            key = next(iter(table.primary_key.columns)).name
            pk = getattr(cls, key)
            stmt = update(cls).where(_where(table, theirs)).values({pk: pk})
            assert session.execute(stmt).rowcount == 0, table.name
            gone = session.execute(delete(cls).where(_where(table, theirs)))
            assert gone.rowcount == 0, table.name
            session.add(cls(**_row(table, B, {**rows_b, table.name: {}})))
            with pytest.raises(db.TenantScopeError):
                session.flush()
            session.rollback()
            db.tenant_scope(session, A)


def test_sqlite_without_a_workspace_nothing_is_visible(
    sqlite: tuple[Engine, dict[str, Row], dict[str, Row]],
) -> None:
    engine, _, _ = sqlite
    with engine.connect() as conn, Session(bind=conn) as session:
        for cls in _tenant_classes():
            assert session.scalars(select(cls)).all() == [], cls.__name__
        db.service_scope(session, "test")
        for cls in _tenant_classes():
            assert len(session.scalars(select(cls)).all()) == 2, cls.__name__


# -- the scope mechanism ---------------------------------------------------------------------------


def test_a_tenant_scope_is_set_again_in_every_transaction_and_ends_with_each() -> None:
    setting = text("SELECT current_setting('herald.workspace_id', true)")
    with db.session_scope() as session:
        db.tenant_scope(session, A)
        assert session.scalar(setting) == str(A)
        session.commit()  # SET LOCAL ended with that transaction; the session sets it again
        assert session.scalar(setting) == str(A)
    with db.get_engine().connect() as conn:  # a pooled connection carries no workspace
        assert conn.execute(setting).scalar() in (None, "")


def test_a_scope_is_chosen_before_the_first_statement_of_a_transaction() -> None:
    with db.session_scope() as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(db.TenantScopeError):
            db.service_scope(session, "too late")
    with pytest.raises(ValueError):
        db.tenant_scope(db.new_session(), "A'; SET ROLE postgres; --")


def test_migration_0014_downgrades_and_upgrades_on_postgres(admin: Engine) -> None:
    forced = text("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'posts'")
    with admin.connect() as conn:
        transaction = conn.begin()  # Postgres DDL is transactional: rolled back at the end
        config = runner.alembic_config(connection=conn)
        command.downgrade(config, "0009")
        assert conn.execute(forced).scalar() is False
        command.upgrade(config, "head")
        assert conn.execute(forced).scalar() is True
        transaction.rollback()


def test_db_roles_prints_the_three_roles_without_passwords() -> None:
    result = CliRunner().invoke(cli, ["db", "roles"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f'ALTER ROLE "{ROLE_NAMES["runtime"]}" LOGIN' in out
    assert "NOBYPASSRLS NOINHERIT" in out
    assert (
        f'ALTER ROLE "{ROLE_NAMES["service"]}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS'
        in out
    )
    assert "ALTER DEFAULT PRIVILEGES" in out
    assert "PASSWORD" not in out


def _runtime_privileges(admin: Engine, table: str) -> set[str]:
    with admin.connect() as conn:
        return {
            privilege
            for privilege in ("INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE")
            if conn.execute(
                text("SELECT has_table_privilege(:role, :table, :privilege)"),
                {"role": ROLE_NAMES["runtime"], "table": table, "privilege": privilege},
            ).scalar()
        }


def test_the_runtime_role_cannot_change_or_remove_audit_rows(admin: Engine) -> None:
    assert _runtime_privileges(admin, "audit_events") == {"INSERT", "SELECT"}


def test_the_runtime_role_only_appends_to_the_audit_tables_no_policy_covers(
    admin: Engine,
) -> None:
    """``audit_personal_data`` holds every workspace's actors' IPs and user agents and has no
    workspace to filter by; the chain's head is one row for all. A runtime session read and
    deleted every workspace's personal data and could remove the head. It now adds personal
    data only (the API reads it as the service role) and never deletes the head."""
    assert _runtime_privileges(admin, "audit_personal_data") == {"INSERT"}
    assert _runtime_privileges(admin, "audit_chain_head") == {"SELECT", "INSERT", "UPDATE"}
    assert _runtime_privileges(admin, "security_findings") == set()
