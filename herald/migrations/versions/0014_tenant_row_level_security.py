"""Tenant isolation on Postgres: row-level security enabled and forced on every tenant table.

Revision ID: 0014
Revises: 0009
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from herald.migrations.rls import TENANT_TABLES, protect, unprotect

revision: str = "0014"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table, condition in TENANT_TABLES.items():
        protect(table, condition)


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        unprotect(table)
