"""Dead letters keep refused broker messages: their raw bytes, queue and workspace.

Revision ID: 0003
Revises: 0010
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("raw", sa.Text(), nullable=True))
        batch_op.alter_column("task_name", existing_type=sa.String(length=200), nullable=True)
        batch_op.create_index(
            batch_op.f("ix_dead_letters_workspace_id"), ["workspace_id"], unique=False
        )


def downgrade() -> None:
    op.execute(sa.text("UPDATE dead_letters SET task_name = '' WHERE task_name IS NULL"))
    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_workspace_id"))
        batch_op.alter_column("task_name", existing_type=sa.String(length=200), nullable=False)
        batch_op.drop_column("raw")
        batch_op.drop_column("queue")
