"""Alerts with a lifecycle, grouped notifications, monitoring records and the default rules.

- alert_rules: keep_firing_for, labels, group_by, filters, no-data and error behaviour,
  inhibits, runbook, builtin, last evaluation;
- alerts: the ``recovering`` state, recovering_since, notify_seq; one open alert per
  fingerprint now counts ``recovering`` and ``error`` as open;
- alert_notifications: kind, group_key, delivery_id, the ``suppressed`` status;
- new: alert_notification_groups, event_counts, audit_verifications;
- the default rules (herald/alerts/defaults.py), as builtin rules for all workspaces.

Revision ID: 0009
Revises: 0003
Create Date: 2026-11-27
"""

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OLD_OPEN = "status IN ('pending', 'firing', 'no_data')"
NEW_OPEN = "status IN ('pending', 'firing', 'recovering', 'no_data', 'error')"
OLD_ALERT_STATUSES = ("pending", "firing", "resolved", "no_data", "error")
NEW_ALERT_STATUSES = ("pending", "firing", "recovering", "resolved", "no_data", "error")
OLD_NOTIFICATION_STATUSES = ("pending", "sent", "failed")
NEW_NOTIFICATION_STATUSES = ("pending", "sent", "failed", "suppressed")
BEHAVIOURS = ("state", "alerting", "ok", "keep_last")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _behaviour(name: str, default: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.Enum(
            *BEHAVIOURS,
            name=f"alert_{name}",
            native_enum=False,
            create_constraint=True,
            length=32,
        ),
        server_default=default,
        nullable=False,
    )


def _replace_check(table: str, name: str, column: str, values: Sequence[str]) -> None:
    """Swap an enum's CHECK constraint (SQLite rebuilds the table; it does not reflect
    CHECKs, so the old one goes with the copy)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f(name), table, type_="check")
        op.create_check_constraint(op.f(name), table, _in(column, values))
    else:
        with op.batch_alter_table(table, recreate="always") as batch_op:
            batch_op.create_check_constraint(op.f(name), _in(column, values))


def _open_index(where: str) -> None:
    with op.batch_alter_table("alerts") as batch_op:
        batch_op.drop_index("uq_alerts_open_fingerprint")
        batch_op.create_index(
            "uq_alerts_open_fingerprint",
            ["fingerprint"],
            unique=True,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


# The default rules as they were when this revision was written (a migration is a snapshot:
# herald/alerts/defaults.py may move on; a later migration then changes these rows).
_DEFAULTS: list[tuple[str, str, int, str, float, int, str, dict[str, Any]]] = [
    # name, metric, window, cmp, threshold, min samples, severity, extra
    ("Failed jobs spike", "publish.failure_rate", 3600, ">", 0.2, 11, "error", {}),
    ("Token refresh failures", "tokens.refresh_success_rate", 3600, "<", 0.9, 6, "warning", {}),
    (
        "Repeated token failures",
        "tokens.refresh_success_rate",
        3600,
        "<",
        0.5,
        4,
        "critical",
        {"inhibits": ["Token refresh failures"]},
    ),
    ("High publish latency", "publish.latency_avg_s", 900, ">", 30.0, 1, "warning", {}),
    ("Queue backlog", "queue.backlog", 60, ">", 100.0, 0, "warning", {}),
    (
        "Workers down",
        "workers.seen",
        180,
        "<",
        1.0,
        0,
        "critical",
        {"inhibits": ["Queue not consumed", "Periodic job missed", "Queue backlog"]},
    ),
    (
        "Queue not consumed",
        "workers.heartbeat_age_s",
        60,
        ">",
        180.0,
        0,
        "error",
        {"group_by": ["queue"]},
    ),
    (
        "Periodic job missed",
        "jobs.last_success_age_s",
        60,
        ">",
        60.0,
        0,
        "error",
        {
            "group_by": ["job"],
            "filters": {"job": "herald.posts.dispatch_due"},
            "no_data_state": "alerting",
        },
    ),
    ("Audit chain broken", "audit.chain_broken", 60, ">", 0.0, 0, "critical", {}),
    (
        "Notification failures",
        "events.count",
        3600,
        ">",
        0.0,
        0,
        "warning",
        {"filters": {"name": "alerts.notification_failed"}},
    ),
]
_DESCRIPTIONS = {
    "Failed jobs spike": "More than 20% of publish attempts failed, over more than 10 attempts.",
    "Token refresh failures": "Fewer than 90% of token refreshes succeeded, over more than 5.",
    "Repeated token failures": "Fewer than half of token refreshes succeeded, over more than 3.",
    "High publish latency": "Provider calls of publish attempts took more than 30 s on average.",
    "Queue backlog": "More than 100 posts are due and waiting (not queued yet, or queued).",
    "Workers down": "No worker consumed a heartbeat in the last 3 minutes.",
    "Queue not consumed": "A queue's last heartbeat was consumed more than 3 minutes ago.",
    "Periodic job missed": "dispatch_due has not succeeded for 30 of its intervals: is beat running?",
    "Audit chain broken": "The audit log verifier found an edited, deleted or reordered row.",
    "Notification failures": "Alert notifications were given up after every retry.",
}


def _insert_defaults() -> None:
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
    rows = []
    for name, metric, window, cmp, threshold, samples, severity, extra in _DEFAULTS:
        rows.append(
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"herald:alert-rule:{name}"),
                "workspace_id": None,
                "name": name,
                "description": _DESCRIPTIONS[name],
                "metric": metric,
                "window_s": window,
                "comparison": cmp,
                "threshold": threshold,
                "min_samples": samples,
                "for_s": 0,
                "keep_firing_for_s": 0,
                "severity": severity,
                "enabled": True,
                "builtin": True,
                "no_data_state": extra.get("no_data_state", "ok"),
                "error_state": "state",
                "runbook": "docs/alerts.md#" + name.lower().replace(" ", "-"),
                "labels": {},
                "group_by": extra.get("group_by", []),
                "filters": extra.get("filters", {}),
                "inhibits": extra.get("inhibits", []),
                "receivers": [],
            }
        )
    op.bulk_insert(rules, rows)


def upgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch_op:
        batch_op.add_column(
            sa.Column("keep_firing_for_s", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("labels", JSON, server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("group_by", JSON, server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("filters", JSON, server_default="{}", nullable=False))
        batch_op.add_column(_behaviour("no_data_state", "ok"))
        batch_op.add_column(_behaviour("error_state", "state"))
        batch_op.add_column(sa.Column("inhibits", JSON, server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("runbook", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(
            sa.Column("builtin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("last_evaluated_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))

    with op.batch_alter_table("alerts") as batch_op:
        batch_op.add_column(
            sa.Column("recovering_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("notify_seq", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_index("ix_alerts_rule_status", ["rule_id", "status"], unique=False)
    _replace_check("alerts", "ck_alerts_alert_status", "status", NEW_ALERT_STATUSES)
    _open_index(NEW_OPEN)

    with op.batch_alter_table("alert_notifications") as batch_op:
        batch_op.alter_column(
            "transition", type_=sa.String(length=64), existing_type=sa.String(length=32)
        )
        batch_op.add_column(
            sa.Column("kind", sa.String(length=32), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("group_key", sa.String(length=500), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("delivery_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_alert_notifications_delivery", ["delivery_id"], unique=False)
    _replace_check(
        "alert_notifications",
        "ck_alert_notifications_notification_status",
        "status",
        NEW_NOTIFICATION_STATUSES,
    )

    op.create_table(
        "alert_notification_groups",
        sa.Column("receiver", sa.String(length=200), nullable=False),
        sa.Column("group_key", sa.String(length=500), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notification_groups")),
        sa.UniqueConstraint(
            "receiver", "group_key", name=op.f("uq_alert_notification_groups_receiver_group_key")
        ),
    )
    op.create_table(
        "event_counts",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=36), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "scope", "bucket_start", name=op.f("pk_event_counts")),
    )
    op.create_index("ix_event_counts_name_bucket", "event_counts", ["name", "bucket_start"])
    op.create_index("ix_event_counts_bucket_start", "event_counts", ["bucket_start"])
    op.create_table(
        "audit_verifications",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("checked", BIGINT, nullable=False),
        sa.Column("first_break", BIGINT, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_verifications")),
    )
    op.create_index(
        op.f("ix_audit_verifications_verified_at"), "audit_verifications", ["verified_at"]
    )
    _insert_defaults()


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM alert_rules WHERE builtin"))
    op.drop_index(op.f("ix_audit_verifications_verified_at"), table_name="audit_verifications")
    op.drop_table("audit_verifications")
    op.drop_index("ix_event_counts_bucket_start", table_name="event_counts")
    op.drop_index("ix_event_counts_name_bucket", table_name="event_counts")
    op.drop_table("event_counts")
    op.drop_table("alert_notification_groups")

    op.execute(
        sa.text("UPDATE alert_notifications SET status = 'failed' WHERE status = 'suppressed'")
    )
    _replace_check(
        "alert_notifications",
        "ck_alert_notifications_notification_status",
        "status",
        OLD_NOTIFICATION_STATUSES,
    )
    with op.batch_alter_table("alert_notifications") as batch_op:
        batch_op.drop_index("ix_alert_notifications_delivery")
        batch_op.drop_column("delivery_id")
        batch_op.drop_column("group_key")
        batch_op.drop_column("kind")
        batch_op.alter_column(
            "transition", type_=sa.String(length=32), existing_type=sa.String(length=64)
        )

    op.execute(sa.text("UPDATE alerts SET status = 'firing' WHERE status = 'recovering'"))
    _open_index(OLD_OPEN)
    _replace_check("alerts", "ck_alerts_alert_status", "status", OLD_ALERT_STATUSES)
    with op.batch_alter_table("alerts") as batch_op:
        batch_op.drop_index("ix_alerts_rule_status")
        batch_op.drop_column("notify_seq")
        batch_op.drop_column("recovering_since")

    with op.batch_alter_table("alert_rules") as batch_op:
        for behaviour in ("no_data_state", "error_state"):
            batch_op.drop_constraint(op.f(f"ck_alert_rules_alert_{behaviour}"), type_="check")
        for column in (
            "last_error",
            "last_evaluated_at",
            "builtin",
            "runbook",
            "inhibits",
            "error_state",
            "no_data_state",
            "filters",
            "group_by",
            "labels",
            "keep_firing_for_s",
        ):
            batch_op.drop_column(column)
