"""The default rule "Publishing workers lost": a publish attempt ended because its process died.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from herald.migrations.rules import add_rules, builtin_rule, remove_rules

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule as it was when this revision was written (herald/alerts/defaults.py may move on).
RULE = builtin_rule(
    "Publishing workers lost",
    "A process died while publishing (OOM killer, crash, kill -9, Flower's Terminate); "
    "its post was settled by asking the network.",
    "publish.errors",
    "docs/alerts.md#publishing-workers-lost",
    filters={"code": "worker_lost"},
)


def upgrade() -> None:
    add_rules([RULE])


def downgrade() -> None:
    remove_rules([RULE])
