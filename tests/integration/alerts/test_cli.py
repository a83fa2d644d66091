"""``herald alerts …``: readable tables, acknowledgement, silences and rules from a shell."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from herald.cli import cli
from herald.models import Alert, AlertRule, Silence
from tests.fixtures.database import service_session
from tests.integration.alerts.conftest import add_rule, errors_at, evaluate

pytestmark = pytest.mark.usefixtures("alerting")


def run(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(
        cli, ["alerts", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_list_ack_and_silence_from_the_command_line() -> None:
    add_rule(name="Disk on fire")
    errors_at(0, 5)
    evaluate(None, 0)
    listed = run("list")
    assert "Disk on fire" in listed
    assert "firing" in listed
    with service_session() as session:
        alert_id = session.scalars(select(Alert.id)).one()
    assert f"acknowledged {alert_id} by carol" in run(
        "ack", str(alert_id), "--by", "carol", "--note", "mine"
    )
    assert "carol" in run("list")
    out = run(
        "silence", 'rule=~"Disk.*"', "severity=warning", "--for", "2h", "--comment", "moving racks"
    )
    assert re.search(r"silence [0-9a-f-]{36} until", out)
    assert "(silenced)" in run("list")
    assert 'rule=~"Disk.*"' in run("silences")
    with service_session() as session:
        silence_id = session.scalars(select(Silence.id)).one()
    assert "expired" in run("unsilence", str(silence_id))


def test_rules_are_listed_added_disabled_and_refused_when_invalid() -> None:
    rule = {
        "name": "Slow X",
        "metric": "publish.latency_avg_s",
        "comparison": ">",
        "threshold": 5,
        "severity": "warning",
    }
    assert "added" in run("rules", "add", json.dumps(rule))
    assert "Slow X" in run("rules")
    with service_session() as session:
        rule_id = session.scalars(select(AlertRule.id).where(AlertRule.name == "Slow X")).one()
    assert "disabled" in run("rules", "disable", str(rule_id))
    bad = CliRunner().invoke(
        cli, ["alerts", "rules", "add", json.dumps({**rule, "metric": "nope"})]
    )
    assert bad.exit_code == 1
    assert "metric: " in bad.output
    assert "10 default rule fields restored" in run("rules", "reset-defaults") or "restored" in run(
        "rules", "reset-defaults"
    )
