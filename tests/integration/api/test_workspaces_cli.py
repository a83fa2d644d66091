"""``herald workspaces …`` and ``herald members …``: the API's rules, from a shell."""

from __future__ import annotations

import re

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.cli import cli
from herald.models import AuditEvent
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.integration.api.conftest import query


def run(*args: str, code: int = 0) -> str:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_workspaces_and_members_from_the_command_line(committed: Engine) -> None:
    made = run("workspaces", "create", "Acme Ops", "--owner", "alice", "--by", "carol")
    (ws_id,) = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", made)
    assert "Acme Ops" in run("workspaces", "list")
    assert "bob" in run("members", "add", ws_id, "bob", "--role", "admin", "--by", "carol")
    assert "member" in run("members", "role", ws_id, "bob", "member")
    listed = run("members", "list", ws_id)
    assert "alice" in listed
    assert "owner" in listed
    assert "a workspace keeps at least one owner" in run(
        "members", "remove", ws_id, "alice", code=1
    )
    assert "Acme Corp" in run("workspaces", "rename", ws_id, "Acme Corp")
    assert "deleted" in run("workspaces", "delete", ws_id, "--by", "carol")
    assert ws_id not in run("workspaces", "list")
    assert "no such workspace" in run("members", "list", ws_id, code=1)
    audited = query(select(AuditEvent).where(AuditEvent.event_type == "admin.action"))
    assert ("cli", "carol", "workspace.delete") in [
        (e.actor_type, e.actor_id, e.details["action"]) for e in audited
    ]


def test_integrations_from_the_command_line(
    committed: Engine, process_settings: Settings, sandbox: SandboxClient
) -> None:
    sandbox.create_account("bluesky", handle="ops.bsky.social", password="app-pass-word")
    made = run("workspaces", "create", "Ops", "--owner", "alice")
    (ws_id,) = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", made)
    refused = CliRunner().invoke(
        cli,
        ["integrations", "connect", "bluesky", ws_id, "--identifier", "ops.bsky.social"],
        input="wrong\n",
    )
    assert refused.exit_code == 1
    assert "did not accept" in refused.output
    connected = CliRunner().invoke(
        cli,
        ["integrations", "connect", "bluesky", ws_id, "--identifier", "ops.bsky.social"],
        input="app-pass-word\n",
    )
    assert connected.exit_code == 0, connected.output
    assert "app-pass-word" not in connected.output.split("\n", 1)[1]
    (integration_id,) = re.findall(r"as ([0-9a-f-]{36})", connected.output)
    listed = run("integrations", "list", ws_id)
    assert "ops.bsky.social" in listed
    assert "active" in listed
    assert "unsupported" in run("integrations", "disconnect", ws_id, integration_id)
    assert "disabled" in run("integrations", "list", ws_id)
