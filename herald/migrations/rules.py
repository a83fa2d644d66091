"""Built-in alert rules added by a migration, in one place that such migrations call.

A revision keeps its own copy of each rule as it was when the revision was written
(:mod:`herald.alerts.defaults` moves on, and ``herald alerts rules reset-defaults`` brings
installed rules up to date); these functions only build, write and delete the rows::

    from herald.migrations.rules import add_rules, builtin_rule, remove_rules
    RULE = builtin_rule("Name", "What it means.", "events.count", "docs/alerts.md#name",
                        filters={"name": "some.counter"})
    def upgrade() -> None: add_rules([RULE])
    def downgrade() -> None: remove_rules([RULE])
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_JSON_COLUMNS = ("labels", "group_by", "filters", "inhibits", "receivers")


def builtin_rule(
    name: str,
    description: str,
    metric: str,
    runbook: str,
    *,
    filters: dict[str, str],
    severity: str = "warning",
    window_s: int = 3600,
    comparison: str = ">",
    threshold: float = 0.0,
) -> dict[str, Any]:
    """An ``alert_rules`` row of a built-in rule for all workspaces (its id derived from its
    name, as every migration that adds a rule derives it)."""
    return {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"herald:alert-rule:{name}"),
        "workspace_id": None,
        "name": name,
        "description": description,
        "metric": metric,
        "window_s": window_s,
        "comparison": comparison,
        "threshold": threshold,
        "min_samples": 0,
        "for_s": 0,
        "keep_firing_for_s": 0,
        "severity": severity,
        "enabled": True,
        "builtin": True,
        "no_data_state": "ok",
        "error_state": "state",
        "runbook": runbook,
        "labels": {},
        "group_by": [],
        "filters": filters,
        "inhibits": [],
        "receivers": [],
    }


def add_rules(rows: list[dict[str, Any]]) -> None:
    columns = [name for name in rows[0] if name != "id" and name not in _JSON_COLUMNS]
    rules = sa.table(
        "alert_rules",
        sa.column("id", sa.Uuid()),
        *(sa.column(name) for name in columns),
        *(sa.column(name, JSON) for name in _JSON_COLUMNS),
    )
    op.bulk_insert(rules, rows)


def remove_rules(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        op.execute(
            sa.text("DELETE FROM alert_rules WHERE builtin AND name = :name").bindparams(
                name=row["name"]
            )
        )
