"""Audit log: sequence numbers, a chain head, personal data outside the hash, append-only.

- ``audit_events`` gains ``sequence`` (backfilled in id order), ``chain_format``, ``action``
  and ``personal_digest``; ``audit_chain_head`` holds the tail (one row, seeded from the
  existing chain); ``audit_personal_data`` holds erasable personal data; ``security_findings``
  holds what the suspicious-activity detector found.
- On Postgres a trigger refuses UPDATE, DELETE and TRUNCATE on ``audit_events``; only the
  table's owner can switch it off (what ``herald audit purge`` does, in one transaction).
- Two default alert rules: "Audit write failures" and "Suspicious activity".

Revision ID: 0013
Revises: 0009
Create Date: 2026-11-27
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
GENESIS = "0" * 64

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION herald_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused (use herald audit purge)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION herald_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION herald_audit_append_only();
"""

# The rules as they were when this revision was written (see 0009 on snapshots).
_RULES = [
    {
        "name": "Audit write failures",
        "description": "Audit events could not be written (the operations went on).",
        "metric": "events.count",
        "window_s": 3600,
        "severity": "error",
        "filters": {"name": "audit.write_failed"},
    },
    {
        "name": "Suspicious activity",
        "description": "The suspicious-activity detector recorded a finding.",
        "metric": "events.count",
        "window_s": 3600,
        "severity": "critical",
        "filters": {"name": "security.suspicious"},
    },
]


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("sequence", _BigInt, nullable=True))
        batch.add_column(
            sa.Column("chain_format", sa.SmallInteger(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("action", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("personal_digest", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE audit_events SET sequence = ("
        " SELECT count(*) FROM audit_events AS earlier WHERE earlier.id <= audit_events.id)"
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("sequence", existing_type=_BigInt, nullable=False)
        batch.alter_column("chain_format", existing_type=sa.SmallInteger(), server_default=None)
        batch.create_unique_constraint(batch.f("uq_audit_events_sequence"), ["sequence"])

    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sequence", _BigInt, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    tail = (
        op.get_bind()
        .execute(sa.text("SELECT sequence, hash FROM audit_events ORDER BY sequence DESC LIMIT 1"))
        .first()
    )
    op.execute(
        sa.text("INSERT INTO audit_chain_head (id, sequence, hash) VALUES (1, :s, :h)").bindparams(
            s=tail[0] if tail else 0, h=tail[1] if tail else GENESIS
        )
    )
    op.create_table(
        "audit_personal_data",
        sa.Column("sequence", _BigInt, autoincrement=False, nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_audit_personal_data")),
    )
    op.create_index(
        op.f("ix_audit_personal_data_subject"), "audit_personal_data", ["subject"], unique=False
    )
    op.create_table(
        "security_findings",
        sa.Column("id", _BigInt, autoincrement=True, nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_findings")),
        sa.UniqueConstraint("key", name=op.f("uq_security_findings_key")),
    )
    op.create_index(
        op.f("ix_security_findings_found_at"), "security_findings", ["found_at"], unique=False
    )
    _insert_rules()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


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
        sa.column("labels", sa.JSON),
        sa.column("group_by", sa.JSON),
        sa.column("filters", sa.JSON),
        sa.column("inhibits", sa.JSON),
        sa.column("receivers", sa.JSON),
        sa.column("id", sa.Uuid()),
    )
    op.bulk_insert(
        rules,
        [
            rule
            | {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"herald:alert-rule:{rule['name']}"),
                "workspace_id": None,
                "comparison": ">",
                "threshold": 0.0,
                "min_samples": 0,
                "for_s": 0,
                "keep_firing_for_s": 0,
                "enabled": True,
                "builtin": True,
                "no_data_state": "ok",
                "error_state": "state",
                "runbook": "docs/security.md#" + str(rule["name"]).lower().replace(" ", "-"),
                "labels": {},
                "group_by": [],
                "inhibits": [],
                "receivers": [],
            }
            for rule in _RULES
        ],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS herald_audit_append_only()")
    op.execute(
        "DELETE FROM alert_rules WHERE builtin AND name IN "
        "('Audit write failures', 'Suspicious activity')"
    )
    op.drop_index(op.f("ix_security_findings_found_at"), table_name="security_findings")
    op.drop_table("security_findings")
    op.drop_index(op.f("ix_audit_personal_data_subject"), table_name="audit_personal_data")
    op.drop_table("audit_personal_data")
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint(batch.f("uq_audit_events_sequence"), type_="unique")
        batch.drop_column("personal_digest")
        batch.drop_column("action")
        batch.drop_column("chain_format")
        batch.drop_column("sequence")
