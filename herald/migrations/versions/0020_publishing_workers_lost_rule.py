"""The default rule "Publishing workers lost": a publish attempt ended because its process died.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# The rule as it was when this revision was written (herald/alerts/defaults.py may move on).
NAME = "Publishing workers lost"
RULE: dict[str, object] = {
    "id": uuid.uuid5(uuid.NAMESPACE_URL, f"herald:alert-rule:{NAME}"),
    "workspace_id": None,
    "name": NAME,
    "description": (
        "A process died while publishing (OOM killer, crash, kill -9, Flower's Terminate); "
        "its post was settled by asking the network."
    ),
    "metric": "publish.errors",
    "window_s": 3600,
    "comparison": ">",
    "threshold": 0.0,
    "min_samples": 0,
    "for_s": 0,
    "keep_firing_for_s": 0,
    "severity": "warning",
    "enabled": True,
    "builtin": True,
    "no_data_state": "ok",
    "error_state": "state",
    "runbook": "docs/alerts.md#publishing-workers-lost",
    "labels": {},
    "group_by": [],
    "filters": {"code": "worker_lost"},
    "inhibits": [],
    "receivers": [],
}
_JSON_COLUMNS = ("labels", "group_by", "filters", "inhibits", "receivers")


def upgrade() -> None:
    rules = sa.table(
        "alert_rules",
        sa.column("id", sa.Uuid()),
        *(sa.column(name) for name in RULE if name != "id" and name not in _JSON_COLUMNS),
        *(sa.column(name, JSON) for name in _JSON_COLUMNS),
    )
    op.bulk_insert(rules, [RULE])


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM alert_rules WHERE builtin AND name = :name").bindparams(name=NAME)
    )
