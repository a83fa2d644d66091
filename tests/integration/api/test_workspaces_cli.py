"""``herald workspaces …`` and ``herald members …``: the API's rules, from a shell."""

from __future__ import annotations

import re

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.cli import cli
from herald.models import AuditEvent
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
