"""Periodic jobs are labelled ``task`` in the figure catalogue, as in ``/metrics``, the
Prometheus rule file and the Grafana dashboard: rules over ``jobs.last_success_age_s`` (the
default "Periodic job missed" among them) group and filter by ``task`` instead of ``job``.

An alert open under the old label resolves at the next evaluation and, if the condition still
holds, a new one opens under ``task``.

Revision ID: 0012
Revises: 0009
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
METRIC = "jobs.last_success_age_s"
_rules = sa.table(
    "alert_rules",
    sa.column("id", sa.Uuid()),
    sa.column("metric", sa.String()),
    sa.column("group_by", JSON),
    sa.column("filters", JSON),
)


def _relabel(old: str, new: str) -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_rules.c.id, _rules.c.group_by, _rules.c.filters).where(_rules.c.metric == METRIC)
    ).all()
    for rule_id, group_by, filters in rows:
        renamed_group: list[Any] = [new if label == old else label for label in group_by or []]
        renamed_filters = {new if k == old else k: v for k, v in (filters or {}).items()}
        conn.execute(
            _rules.update()
            .where(_rules.c.id == rule_id)
            .values(group_by=renamed_group, filters=renamed_filters)
        )


def upgrade() -> None:
    _relabel("job", "task")


def downgrade() -> None:
    _relabel("task", "job")
