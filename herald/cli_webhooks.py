"""``herald webhooks …``: a workspace's webhook subscriptions from the command line (the same
code as ``/api/postiz/webhooks``), in the service scope; uses are audited as admin actions."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session

from herald.models.webhook import EVENTS
from herald.settings import get_settings


@contextmanager
def _session(action: str, workspace: uuid.UUID) -> Iterator[Session]:
    from herald import db
    from herald.security import audit
    from herald.security.audit import Actor, EventType, Severity

    with db.session_scope() as session:
        db.service_scope(session, f"cli.webhooks.{action}")
        yield session
        audit.record(
            session,
            EventType.ADMIN_ACTION,
            actor=Actor("cli"),
            severity=Severity.MEDIUM,
            workspace_id=workspace,
            resource_type="webhook_subscription",
            message=f"webhook subscription {action} from the command line",
            details={"action": f"webhooks.{action}"},
        )


@click.group()
def webhooks() -> None:
    """Integrators' webhook subscriptions of a workspace."""


@webhooks.command("list")
@click.option("--workspace", required=True, type=click.UUID)
def webhooks_list(workspace: uuid.UUID) -> None:
    from herald.webhooks import subscriptions

    with _session("list", workspace) as session:
        for row in subscriptions.list_for(session, workspace):
            reason = f"  ({row.paused_reason})" if row.paused_reason else ""
            click.echo(f"{row.id}  {row.status.value:<7} {','.join(row.events)}  {row.url}{reason}")


@webhooks.command("create")
@click.option("--workspace", required=True, type=click.UUID)
@click.option("--url", required=True)
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS), required=True)
@click.option("--description", default=None)
def webhooks_create(
    workspace: uuid.UUID, url: str, events: tuple[str, ...], description: str | None
) -> None:
    """Subscribe URL to events; prints the signing secret, once."""
    from herald.security.crypto import KeyRing
    from herald.webhooks import subscriptions

    settings = get_settings()
    try:
        with _session("create", workspace) as session:
            created = subscriptions.create(
                session,
                workspace,
                url=url,
                events=list(events),
                description=description,
                keys=KeyRing.from_settings(settings),
                settings=settings,
            )
            click.echo(f"id:     {created.subscription.id}")
            click.echo(f"secret: {created.secret}  (shown once: keep it to verify signatures)")
    except ValueError as exc:
        click.echo(f"herald: {exc}", err=True)
        sys.exit(1)


@webhooks.command("delete")
@click.option("--workspace", required=True, type=click.UUID)
@click.argument("subscription_id", type=click.UUID)
def webhooks_delete(workspace: uuid.UUID, subscription_id: uuid.UUID) -> None:
    from herald.webhooks import subscriptions

    try:
        with _session("delete", workspace) as session:
            subscriptions.delete(session, workspace, subscription_id)
    except LookupError as exc:
        click.echo(f"herald: {exc}", err=True)
        sys.exit(1)
    click.echo(f"deleted {subscription_id}")


@webhooks.command("resume")
@click.option("--workspace", required=True, type=click.UUID)
@click.argument("subscription_id", type=click.UUID)
def webhooks_resume(workspace: uuid.UUID, subscription_id: uuid.UUID) -> None:
    """Take back a subscription that was paused because it kept failing."""
    from herald.webhooks import subscriptions

    try:
        with _session("resume", workspace) as session:
            subscriptions.resume(session, workspace, subscription_id)
    except LookupError as exc:
        click.echo(f"herald: {exc}", err=True)
        sys.exit(1)
    click.echo(f"resumed {subscription_id}")
