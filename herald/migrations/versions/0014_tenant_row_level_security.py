"""Tenant isolation on Postgres: row-level security enabled and forced on every tenant table.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from herald.migrations.rls import (
    APPEND_ONLY_TABLES,
    TENANT_TABLES,
    protect,
    protect_append_only,
    unprotect,
)

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table, condition in TENANT_TABLES.items():
        protect(table, condition)
    for table, condition in APPEND_ONLY_TABLES.items():
        protect_append_only(table, condition)


def downgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        unprotect(table)
    for table in reversed(TENANT_TABLES):
        unprotect(table)
