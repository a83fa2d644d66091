"""A row that names another tenant table's row names one of its own workspace.

Row-level security checks a row's own ``workspace_id`` only; a foreign key is checked past it.
With single-column keys, a workspace's post could name another workspace's integration (the
post was then published with that workspace's tokens) and a delivery another workspace's webhook
subscription (signed with its secret). Each such key is now ``(workspace_id, column)`` against
``(workspace_id, id)`` of its parent, for posts → integrations, publish attempts, media uploads
and metrics → posts, refresh attempts → integrations, and deliveries → subscriptions.

Creating a key checks every existing row: a row that already points across workspaces stops the
upgrade with the constraint's name (no correct deployment has one).

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARENTS = ("integrations", "posts", "webhook_subscriptions")
#: (table, column, parent, on delete)
POINTERS = (
    ("posts", "integration_id", "integrations", "RESTRICT"),
    ("publish_attempts", "post_id", "posts", "CASCADE"),
    ("post_media_uploads", "post_id", "posts", "CASCADE"),
    ("post_metrics", "post_id", "posts", "CASCADE"),
    ("token_refresh_attempts", "integration_id", "integrations", "CASCADE"),
    ("webhook_deliveries", "subscription_id", "webhook_subscriptions", "CASCADE"),
)


def upgrade() -> None:
    for parent in PARENTS:
        with op.batch_alter_table(parent, schema=None) as batch_op:
            batch_op.create_unique_constraint(
                f"uq_{parent}_workspace_id_id", ["workspace_id", "id"]
            )
    for table, column, parent, ondelete in POINTERS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_{column}_{parent}", type_="foreignkey")
            batch_op.create_foreign_key(
                f"fk_{table}_workspace_id_{parent}",
                parent,
                ["workspace_id", column],
                ["workspace_id", "id"],
                ondelete=ondelete,
            )


def downgrade() -> None:
    for table, column, parent, ondelete in POINTERS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_workspace_id_{parent}", type_="foreignkey")
            batch_op.create_foreign_key(
                f"fk_{table}_{column}_{parent}", parent, [column], ["id"], ondelete=ondelete
            )
    for parent in PARENTS:
        with op.batch_alter_table(parent, schema=None) as batch_op:
            batch_op.drop_constraint(f"uq_{parent}_workspace_id_id", type_="unique")
