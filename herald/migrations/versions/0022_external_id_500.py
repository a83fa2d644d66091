"""A post's ``external_id`` holds 500 characters, as the answer a worker carries does.

Bluesky's id is an AT URI, whose DID may name a host (``did:web``) of up to 253 characters:
past the 200 the column held. Widening a ``varchar`` rewrites nothing on Postgres.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.alter_column(
            "external_id", type_=sa.String(length=500), existing_type=sa.String(length=200)
        )


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.alter_column(
            "external_id", type_=sa.String(length=200), existing_type=sa.String(length=500)
        )
