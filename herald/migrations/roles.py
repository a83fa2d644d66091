"""The three Postgres roles Herald runs as, and the SQL that makes them (``herald db roles``).

- **migration**: owns the schema (``herald db upgrade`` connects as it). ``BYPASSRLS``, so a
  data migration sees every workspace's rows although RLS is forced on the tables it owns.
- **runtime**: every request and tenant-scoped task. ``NOBYPASSRLS``, owns no table, holds
  only DML grants, is a member of no other role: with no ``herald.workspace_id`` set it sees
  no tenant row, and no ``SET ROLE`` or setting lets it become the service role.
- **service**: cross-workspace jobs (dispatch, sweep, alert evaluation, refresh beat, audit).
  ``BYPASSRLS`` and the same DML grants.

The statements are idempotent: run them again after adding a role or moving a deployment.
Grants on tables created later come from ``ALTER DEFAULT PRIVILEGES`` for the migration role,
so new migrations need no grant of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from herald.db import make_engine

DML = "SELECT, INSERT, UPDATE, DELETE"
#: Tables the runtime role may do less with than the DML above, and what it may do. Each is
#: system-wide or append-only: ``audit_events`` is the chain (rows added, never changed);
#: ``audit_personal_data`` holds every workspace's actors' IPs and user agents with no
#: workspace to filter by (the API reads it as the service role); ``audit_chain_head`` is the
#: chain's one head row, moved by each append (and seeded by the first where a schema lacks
#: it), never deleted; ``security_findings`` is the service role's detector's alone.
RUNTIME_ONLY = {
    "audit_events": "SELECT, INSERT",
    "audit_personal_data": "INSERT",
    "audit_chain_head": "SELECT, INSERT, UPDATE",
    "security_findings": "",
}


@dataclass(frozen=True)
class Roles:
    migration: str = "herald_migration"
    runtime: str = "herald_runtime"
    service: str = "herald_service"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create(role: str, attributes: str, password: str | None) -> list[str]:
    statements = [
        "DO $$ BEGIN CREATE ROLE "
        + _ident(role)
        + "; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"ALTER ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE {attributes}",
    ]
    if password:
        statements.append(f"ALTER ROLE {_ident(role)} PASSWORD {_literal(password)}")
    return statements


def role_statements(
    database: str,
    roles: Roles = Roles(),
    passwords: dict[str, str] | None = None,
    schema: str = "public",
) -> list[str]:
    """The SQL (run in ``database`` by a superuser) that creates or repairs the three roles."""
    passwords = passwords or {}
    mig, rt, svc = _ident(roles.migration), _ident(roles.runtime), _ident(roles.service)
    db, sch = _ident(database), _ident(schema)
    return [
        *_create(roles.migration, "BYPASSRLS", passwords.get(roles.migration)),
        *_create(roles.runtime, "NOBYPASSRLS NOINHERIT", passwords.get(roles.runtime)),
        *_create(roles.service, "BYPASSRLS NOINHERIT", passwords.get(roles.service)),
        # The runtime role can become no other: no membership, hence no SET ROLE.
        f"REVOKE {svc}, {mig} FROM {rt}",
        f"GRANT CONNECT, CREATE ON DATABASE {db} TO {mig}",
        f"GRANT CONNECT ON DATABASE {db} TO {rt}, {svc}",
        f"GRANT USAGE, CREATE ON SCHEMA {sch} TO {mig}",
        f"GRANT USAGE ON SCHEMA {sch} TO {rt}, {svc}",
        f"GRANT {DML} ON ALL TABLES IN SCHEMA {sch} TO {rt}, {svc}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {sch} TO {rt}, {svc}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {mig} IN SCHEMA {sch} "
        f"GRANT {DML} ON TABLES TO {rt}, {svc}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {mig} IN SCHEMA {sch} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {rt}, {svc}",
        # The runtime role's narrower tables (the grant above gives the DML back on every run,
        # so this follows it): append-only and system-wide tables, as RUNTIME_ONLY says.
        *(
            f"DO $$ BEGIN IF to_regclass({_literal(schema + '.' + table)}) IS NOT NULL THEN "
            f"REVOKE ALL ON {sch}.{_ident(table)} FROM {rt}; "
            + (f"GRANT {allowed} ON {sch}.{_ident(table)} TO {rt}; " if allowed else "")
            + "END IF; END $$"
            for table, allowed in RUNTIME_ONLY.items()
        ),
    ]


def roles_from_urls(runtime: str, service: str | None, migration: str | None) -> Roles:
    """Role names from the configured URLs' user names (defaults where a URL names none)."""
    default = Roles()

    def user(url: str | None, fallback: str) -> str:
        if not url or not url.startswith("postgresql"):
            return fallback
        return urlsplit(url).username or fallback

    return Roles(
        migration=user(migration, default.migration),
        runtime=user(runtime, default.runtime),
        service=user(service, default.service),
    )


def passwords_from_urls(*urls: str | None) -> dict[str, str]:
    found = {}
    for url in urls:
        if url and url.startswith("postgresql"):
            parsed = make_url(url)
            if parsed.username and parsed.password:
                found[parsed.username] = parsed.password
    return found


def apply(admin_url: str, database: str, statements: list[str]) -> None:
    """Run ``statements`` in ``database`` as the administrator of ``admin_url``."""
    url = make_url(admin_url).set(database=database)
    engine = make_engine(url.render_as_string(hide_password=False), poolclass=None)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
