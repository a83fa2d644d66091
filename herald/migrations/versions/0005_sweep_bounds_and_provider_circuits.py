"""The sweep's bounded work per stuck post, and per-provider circuit breakers.

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("posts") as batch_op:
        batch_op.add_column(
            sa.Column("resolve_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("resolve_after", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "provider_circuits",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "closed",
                "open",
                "half_open",
                name="circuit_state",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probes_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("window_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("window_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("window_integrations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("openings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_provider_circuits")),
    )


def downgrade() -> None:
    op.drop_table("provider_circuits")
    with op.batch_alter_table("posts") as batch_op:
        batch_op.drop_column("resolve_after")
        batch_op.drop_column("resolve_attempts")
