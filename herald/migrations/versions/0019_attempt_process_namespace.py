"""A publish attempt names the pid namespace of the process that ran it.

With it a worker can prove that the process behind an open attempt is gone (a worker killed
whole, then restarted, or beside another worker on its host) and reconcile the post at once,
instead of after ``HERALD_PUBLISHING_TIMEOUT_S``.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("publish_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("process_ns", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("publish_attempts", schema=None) as batch_op:
        batch_op.drop_column("process_ns")
