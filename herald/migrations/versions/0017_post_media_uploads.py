"""Media uploaded for a post are recorded, so each is uploaded once.

Revision ID: 0017
Revises: 0015
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from herald.migrations.rls import protect, unprotect

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "post_media_uploads",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("network", sa.String(length=32), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("media_id", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_post_media_uploads_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_post_media_uploads_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_media_uploads")),
        sa.UniqueConstraint(
            "post_id",
            "network",
            "item_index",
            name=op.f("uq_post_media_uploads_post_id_network_item_index"),
        ),
    )
    with op.batch_alter_table("post_media_uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_post_media_uploads_workspace_id"), ["workspace_id"], unique=False
        )
    protect("post_media_uploads")


def downgrade() -> None:
    unprotect("post_media_uploads")
    with op.batch_alter_table("post_media_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_post_media_uploads_workspace_id"))
    op.drop_table("post_media_uploads")
