"""Integrators: webhook subscriptions and their delivery outbox, a version on posts (for
optimistic concurrency on edits), and the default rules that report connections needing their
user and webhook subscriptions paused.

Revision ID: 0016
Revises: 0017
Create Date: 2026-11-27
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from herald.migrations.rls import protect, unprotect

revision: str = "0016"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# The rules as they were when this revision was written (herald/alerts/defaults.py may move on).
_RULES = [
    (
        "Connections need reconnecting",
        "A connection's refresh token was refused (invalid_grant): its posts wait for the user.",
        "integrations.needs_reauth",
    ),
    (
        "Webhook subscriptions paused",
        "An integrator's webhook subscription kept failing and was paused.",
        "webhooks.subscription_paused",
    ),
]


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret_ciphertext", sa.String(length=500), nullable=False),
        sa.Column(
            "status", _enum("webhook_subscription_status", "active", "paused"), nullable=False
        ),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_webhook_subscriptions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_index(
        op.f("ix_webhook_subscriptions_workspace_id"), "webhook_subscriptions", ["workspace_id"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column(
            "status",
            _enum("webhook_delivery_status", "pending", "sent", "failed"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_webhook_deliveries_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_workspace_id"), "webhook_deliveries", ["workspace_id"]
    )
    op.create_index(
        "ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_webhook_deliveries_subscription",
        "webhook_deliveries",
        ["subscription_id", "created_at"],
    )
    protect("webhook_subscriptions")
    protect("webhook_deliveries")
    with op.batch_alter_table("posts") as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    _insert_rules()


def _insert_rules() -> None:
    rules = sa.table(
        "alert_rules",
        *(
            sa.column(name)
            for name in (
                "workspace_id",
                "name",
                "description",
                "metric",
                "window_s",
                "comparison",
                "threshold",
                "min_samples",
                "for_s",
                "keep_firing_for_s",
                "severity",
                "enabled",
                "builtin",
                "no_data_state",
                "error_state",
                "runbook",
            )
        ),
        sa.column("labels", JSON),
        sa.column("group_by", JSON),
        sa.column("filters", JSON),
        sa.column("inhibits", JSON),
        sa.column("receivers", JSON),
        sa.column("id", sa.Uuid()),
    )
    op.bulk_insert(
        rules,
        [
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"herald:alert-rule:{name}"),
                "workspace_id": None,
                "name": name,
                "description": description,
                "metric": "events.count",
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
                "runbook": "docs/alerts.md#" + name.lower().replace(" ", "-"),
                "labels": {},
                "group_by": [],
                "filters": {"name": counter},
                "inhibits": [],
                "receivers": [],
            }
            for name, description, counter in _RULES
        ],
    )


def downgrade() -> None:
    for name, _, _ in _RULES:
        op.execute(
            sa.text("DELETE FROM alert_rules WHERE builtin AND name = :name").bindparams(name=name)
        )
    with op.batch_alter_table("posts") as batch_op:
        batch_op.drop_column("version")
    unprotect("webhook_deliveries")
    unprotect("webhook_subscriptions")
    op.drop_index("ix_webhook_deliveries_subscription", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_status_next", table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_workspace_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_webhook_subscriptions_workspace_id"), table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
