"""A queue remembers since when beat has expected it to be consumed.

"Queue not consumed" reads the age of a queue's last consumed heartbeat. A queue no worker has
ever consumed (every worker started without it) had no row to age, so the rule could not fire
for it. Beat now records the queues it sends heartbeats to when it starts (``expected_since``),
and a queue's age counts from then until its first heartbeat is consumed; the round-trip
columns stay empty until then.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROUND_TRIP = (
    ("sent_at", sa.DateTime(timezone=True)),
    ("received_at", sa.DateTime(timezone=True)),
    ("worker", sa.String(length=200)),
)


def upgrade() -> None:
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_since", sa.DateTime(timezone=True), nullable=True))
        for name, type_ in _ROUND_TRIP:
            batch_op.alter_column(name, existing_type=type_, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM heartbeats WHERE received_at IS NULL")
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        for name, type_ in _ROUND_TRIP:
            batch_op.alter_column(name, existing_type=type_, nullable=False)
        batch_op.drop_column("expected_since")
