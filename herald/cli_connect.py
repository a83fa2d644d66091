"""``herald workspaces …``, ``herald members …`` and ``herald integrations …`` as tables.

The CLI works on the database directly, as the service role would (every action is audited
with the operator's name, ``--by``), through the same :mod:`herald.connections` functions the
API calls, so the same rules hold: the last owner stays, a deleted workspace stops publishing.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from herald.cli_alerts import _fail, _table, _when
from herald.settings import get_settings

T = TypeVar("T")

BY = click.option(
    "--by",
    default=getpass.getuser,
    show_default="you",
    help="Operator, for the audit log",
)


@contextmanager
def _session(workspace_id: uuid.UUID | None) -> Iterator[Any]:
    """A transaction limited to ``workspace_id``; without one, the service scope (listing every
    workspace is the one command that spans them)."""
    from herald import db

    with db.session_scope() as session:
        if workspace_id is None:
            db.service_scope(session, "cli.list_workspaces")
        else:
            db.tenant_scope(session, workspace_id)
        yield session


def _manager(by: str) -> Any:
    from herald.connections.access import Manager
    from herald.security.audit import Actor

    return Manager(Actor("cli", by), None)


def _run(action: Callable[[Any], T], workspace_id: uuid.UUID | None = None) -> T:
    """Run ``action(session)`` in ``workspace_id``'s scope; a refusal is printed as
    ``herald: <message>`` and exits 1."""
    from herald.connections.access import Refused

    try:
        with _session(workspace_id) as session:
            return action(session)
    except Refused as exc:
        _fail(exc.message)
        raise AssertionError from exc  # unreachable: _fail exits


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a workspace id") from None


# -- workspaces ---------------------------------------------------------------------------------


@click.group()
def workspaces() -> None:
    """Create, list, rename and delete workspaces."""


def _show_workspaces(views: list[Any]) -> None:
    _table(
        "workspaces",
        ["id", "name", "slug", "members", "created"],
        [
            [
                str(v.workspace.id),
                v.workspace.name,
                v.workspace.slug,
                str(v.members),
                _when(v.workspace.created_at),
            ]
            for v in views
        ],
    )


@workspaces.command("list")
def workspaces_list() -> None:
    """Every live workspace."""
    from herald.connections import workspaces as service

    _show_workspaces(_run(lambda s: service.list_workspaces(s, _manager("cli"))))


@workspaces.command("create")
@click.argument("name")
@click.option("--owner", "owner", required=True, help="User id of the first owner")
@click.option("--slug", default=None)
@BY
def workspaces_create(name: str, owner: str, slug: str | None, by: str) -> None:
    """Create a workspace with its first owner."""
    from herald.connections import workspaces as service

    new = uuid.uuid4()  # the insert runs in the new workspace's own scope
    view = _run(
        lambda s: service.create_workspace(
            s, _manager(by), name, slug=slug, owner_user_id=owner, workspace_id=new
        ),
        new,
    )
    _show_workspaces([view])


@workspaces.command("rename")
@click.argument("workspace_id")
@click.argument("name")
@BY
def workspaces_rename(workspace_id: str, name: str, by: str) -> None:
    from herald.connections import workspaces as service

    _show_workspaces(
        [
            _run(
                lambda s: service.rename_workspace(s, _manager(by), _uuid(workspace_id), name),
                _uuid(workspace_id),
            )
        ]
    )


@workspaces.command("delete")
@click.argument("workspace_id")
@BY
def workspaces_delete(workspace_id: str, by: str) -> None:
    """Delete softly: hidden from everyone, its integrations disabled, nothing publishes."""
    from herald.connections import workspaces as service

    _run(
        lambda s: service.delete_workspace(s, _manager(by), _uuid(workspace_id)),
        _uuid(workspace_id),
    )
    click.echo(f"workspace {workspace_id} deleted; its integrations are disabled")


# -- members ------------------------------------------------------------------------------------


@click.group()
def members() -> None:
    """Add, re-role and remove the members of a workspace."""


def _show_members(workspace_id: str, memberships: list[Any]) -> None:
    _table(
        f"members of {workspace_id}",
        ["user", "role", "added"],
        [[m.user_id, m.role.value, _when(m.created_at)] for m in memberships],
    )


ROLE = click.Choice(["owner", "admin", "member"])


@members.command("list")
@click.argument("workspace_id")
def members_list(workspace_id: str) -> None:
    from herald.connections import workspaces as service

    _show_members(
        workspace_id,
        _run(
            lambda s: service.list_members(s, _manager("cli"), _uuid(workspace_id)),
            _uuid(workspace_id),
        ),
    )


@members.command("add")
@click.argument("workspace_id")
@click.argument("user_id")
@click.option("--role", type=ROLE, default="member", show_default=True)
@BY
def members_add(workspace_id: str, user_id: str, role: str, by: str) -> None:
    from herald.connections import workspaces as service
    from herald.models import Role

    added = _run(
        lambda s: service.add_member(s, _manager(by), _uuid(workspace_id), user_id, Role(role)),
        _uuid(workspace_id),
    )
    _show_members(workspace_id, [added])


@members.command("role")
@click.argument("workspace_id")
@click.argument("user_id")
@click.argument("role", type=ROLE)
@BY
def members_role(workspace_id: str, user_id: str, role: str, by: str) -> None:
    from herald.connections import workspaces as service
    from herald.models import Role

    changed = _run(
        lambda s: service.change_role(s, _manager(by), _uuid(workspace_id), user_id, Role(role)),
        _uuid(workspace_id),
    )
    _show_members(workspace_id, [changed])


@members.command("remove")
@click.argument("workspace_id")
@click.argument("user_id")
@BY
def members_remove(workspace_id: str, user_id: str, by: str) -> None:
    from herald.connections import workspaces as service

    _run(
        lambda s: service.remove_member(s, _manager(by), _uuid(workspace_id), user_id),
        _uuid(workspace_id),
    )
    click.echo(f"{user_id} removed from {workspace_id}")


# -- integrations -------------------------------------------------------------------------------


@click.group()
def integrations() -> None:
    """List, connect and disconnect a workspace's accounts."""


def _show_integrations(views: list[Any]) -> None:
    _table(
        "integrations",
        ["id", "provider", "account", "status", "token expires", "last refresh", "last error"],
        [
            [
                str(v.integration.id),
                v.integration.provider,
                v.integration.handle or v.integration.external_account_id,
                v.integration.status.value,
                _when(v.integration.token_expires_at),
                _when(v.integration.last_refreshed_at),
                f"{v.last_error_code}: {v.last_error_message}" if v.last_error_code else "-",
            ]
            for v in views
        ],
    )


@integrations.command("list")
@click.argument("workspace_id")
def integrations_list(workspace_id: str) -> None:
    """A workspace's accounts: status, expiry, last refresh, last error (never tokens)."""
    from herald.connections import accounts

    _show_integrations(
        _run(
            lambda s: accounts.list_integrations(s, _manager("cli"), _uuid(workspace_id)),
            _uuid(workspace_id),
        )
    )


def _keys() -> Any:
    from herald.security.crypto import KeyRing

    return KeyRing.from_settings(get_settings())


def _ask_credentials(provider: str, identifier: str | None) -> dict[str, str]:
    """What a credential network needs, asked for without echoing the secret."""
    if provider == "bluesky":
        return {
            "identifier": identifier or click.prompt("handle"),
            "app_password": click.prompt("app password", hide_input=True),
        }
    if provider == "telegram":
        return {
            "chat_id": identifier or click.prompt("chat id or @channel"),
            "bot_token": click.prompt("bot token", hide_input=True),
        }
    return {"webhook_url": click.prompt("webhook URL", hide_input=True)}


@integrations.command("connect")
@click.argument("provider")
@click.argument("workspace_id")
@click.option("--identifier", help="Bluesky: the handle or DID; Telegram: the chat")
@BY
def integrations_connect(provider: str, workspace_id: str, identifier: str | None, by: str) -> None:
    """Connect an account. OAuth networks: open the printed URL, approve, and paste the URL the
    network sent you back to. Bluesky, Telegram, Discord (webhook): the credential is asked
    for without echo."""
    from urllib.parse import parse_qs, urlsplit

    from herald.connections import accounts, oauth
    from herald.connections.access import Refused

    settings, manager, ws = get_settings(), _manager(by), _uuid(workspace_id)
    try:
        if provider in accounts.CREDENTIAL_NETWORKS:
            integration, _ = accounts.connect_with_credentials(
                settings,
                _keys(),
                manager,
                ws,
                provider=provider,
                credentials=_ask_credentials(provider, identifier),
            )
        else:
            started = oauth.begin(settings, _keys(), manager, ws, provider)
            click.echo(f"Open this URL and approve:\n  {started.url}")
            back = parse_qs(urlsplit(click.prompt("URL you were sent back to")).query)
            integration, _ = oauth.finish(
                settings,
                _keys(),
                manager,
                provider,
                code=back.get("code", [""])[0],
                state=back.get("state", [""])[0],
                workspace_id=ws,
            )
    except Refused as exc:
        _fail(exc.message)
        return
    click.echo(f"connected {provider} account {integration.handle or ''} as {integration.id}")


@integrations.command("disconnect")
@click.argument("workspace_id")
@click.argument("integration_id")
@BY
def integrations_disconnect(workspace_id: str, integration_id: str, by: str) -> None:
    """Revoke at the network where possible, disable, forget the tokens (audited)."""
    from herald.connections import accounts
    from herald.connections.access import Refused

    try:
        _, revocation = accounts.disconnect(
            get_settings(), _keys(), _manager(by), _uuid(workspace_id), _uuid(integration_id)
        )
    except Refused as exc:
        _fail(exc.message)
        return
    click.echo(f"disconnected {integration_id} (at the network: {revocation})")
