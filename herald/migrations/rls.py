"""Row-level security for tenant tables, in one place that every migration calls.

A tenant table is one whose rows belong to a workspace. On Postgres each gets RLS enabled and
forced (so the table's owner is filtered too) and one policy, ``herald_tenant``: a row is
visible, and may be written, only when its workspace is the transaction's
``herald.workspace_id`` (set by :func:`herald.db.tenant_scope` with ``SET LOCAL`` semantics).
With nothing set, ``current_setting(..., true)`` is NULL (or ``''`` once a ``SET LOCAL`` has
ended), the comparison is never true and the runtime role sees and writes no tenant row.
Cross-workspace work connects as the service role, which has ``BYPASSRLS`` (see
``herald db roles``); no setting a session can change opens the policy.

A migration that creates a tenant table ends with one line::

    from herald.migrations.rls import protect
    protect("new_table")                     # keyed on its workspace_id column

and its downgrade with ``unprotect("new_table")`` before dropping it. The test suite's catalog
check (tests/integration/security/test_rls.py) fails for any table with a ``workspace_id``
column that is not protected. SQLite has no RLS; :mod:`herald.db` scopes ORM queries instead.
"""

from __future__ import annotations

from alembic import op

POLICY = "herald_tenant"
CURRENT_WORKSPACE = "NULLIF(current_setting('herald.workspace_id', true), '')::uuid"

# Tenant tables when 0014 ran, with the SQL condition that ties a row to the current workspace.
# Tables created later call protect() in their own migration.
TENANT_TABLES: dict[str, str] = {
    "workspaces": f"id = {CURRENT_WORKSPACE}",
    "memberships": f"workspace_id = {CURRENT_WORKSPACE}",
    "integrations": f"workspace_id = {CURRENT_WORKSPACE}",
    "token_refresh_attempts": f"workspace_id = {CURRENT_WORKSPACE}",
    "oauth_states": f"workspace_id = {CURRENT_WORKSPACE}",
    "posts": f"workspace_id = {CURRENT_WORKSPACE}",
    "publish_attempts": f"workspace_id = {CURRENT_WORKSPACE}",
    "post_metrics": f"workspace_id = {CURRENT_WORKSPACE}",
    "dead_letters": f"workspace_id = {CURRENT_WORKSPACE}",
    "alert_rules": f"workspace_id = {CURRENT_WORKSPACE}",
    "alerts": f"workspace_id = {CURRENT_WORKSPACE}",
    "silences": f"workspace_id = {CURRENT_WORKSPACE}",
    # No workspace_id, but an alert's notification carries its alert's labels and values: it
    # is visible exactly when its alert is (the subquery is itself filtered by alerts' policy).
    "alert_notifications": "EXISTS (SELECT 1 FROM alerts WHERE alerts.id = alert_id)",
}


def _is_postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def protect(table: str, condition: str | None = None) -> None:
    """Enable and force RLS on ``table`` with the tenant policy (Postgres; nothing on SQLite).

    ``condition`` defaults to the ``workspace_id`` column matching the current workspace.
    """
    if not _is_postgres():
        return
    condition = condition or f"workspace_id = {CURRENT_WORKSPACE}"
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
    op.execute(
        f'CREATE POLICY {POLICY} ON "{table}" FOR ALL USING ({condition}) WITH CHECK ({condition})'
    )


# The audit log is one chain across every workspace: a workspace reads its own rows, any scope
# may append a row of its own workspace or of none (a denial before a workspace is known), and
# no role changes or removes a row (the append-only triggers of 0013 say so again).
APPEND_ONLY_TABLES: dict[str, str] = {"audit_events": f"workspace_id = {CURRENT_WORKSPACE}"}
APPEND_POLICY = "herald_append"


def protect_append_only(table: str, condition: str | None = None) -> None:
    """RLS for an append-only tenant table: reads filtered like :func:`protect`, inserts of the
    current workspace's rows or of rows without a workspace, and no UPDATE or DELETE policy."""
    if not _is_postgres():
        return
    condition = condition or f"workspace_id = {CURRENT_WORKSPACE}"
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
    op.execute(f'DROP POLICY IF EXISTS {APPEND_POLICY} ON "{table}"')
    op.execute(f'CREATE POLICY {POLICY} ON "{table}" FOR SELECT USING ({condition})')
    op.execute(
        f'CREATE POLICY {APPEND_POLICY} ON "{table}" FOR INSERT '
        f"WITH CHECK (workspace_id IS NULL OR {condition})"
    )


def unprotect(table: str) -> None:
    """Undo :func:`protect` (a downgrade)."""
    if not _is_postgres():
        return
    op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
    op.execute(f'DROP POLICY IF EXISTS {APPEND_POLICY} ON "{table}"')
    op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
