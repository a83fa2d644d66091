"""The default rule "Broker lost messages": queued posts were sent again because the broker lost
every message it held.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from herald.migrations.rules import add_rules, builtin_rule, remove_rules

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule as it was when this revision was written (herald/alerts/defaults.py may move on).
RULE = builtin_rule(
    "Broker lost messages",
    "The broker lost every message it held (a Redis restart without persistence, a flush): "
    "queued posts were sent again.",
    "events.count",
    "docs/alerts.md#broker-lost-messages",
    filters={"name": "broker.messages_lost"},
)


def upgrade() -> None:
    add_rules([RULE])


def downgrade() -> None:
    remove_rules([RULE])
