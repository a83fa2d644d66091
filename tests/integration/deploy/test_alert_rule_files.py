"""deploy/: the Prometheus rule file and its unit tests, and the Alertmanager configuration,
checked by the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from herald.alerts.defaults import DEFAULT_RULES
from tests.fixtures.external import binary

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "herald.yml"
# Herald-internal: they read Herald's own records, which Prometheus does not see (failed
# deliveries, connections that need their user, paused webhook subscriptions, the
# suspicious-activity detector's findings).
HERALD_ONLY = {
    "Notification failures",
    "Suspicious activity",
    "Connections need reconnecting",
    "Webhook subscriptions paused",
}


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_the_rule_file() -> None:
    output = run(binary("promtool", "prometheus"), "check", "rules", str(RULES))
    alerts = len(re.findall(r"^\s*- alert: ", RULES.read_text(), re.M))
    assert alerts == len(DEFAULT_RULES) - len(HERALD_ONLY)
    assert f"SUCCESS: {alerts} rules found" in output


def test_the_promql_rules_pass_their_unit_tests() -> None:
    output = run(
        binary("promtool", "prometheus"),
        "test",
        "rules",
        str(DEPLOY / "prometheus" / "rules_test.yml"),
    )
    assert "SUCCESS" in output


def test_the_rule_file_carries_every_default_rule() -> None:
    named = set(re.findall(r"herald_rule: (.+)", RULES.read_text()))
    assert named == {rule.name for rule in DEFAULT_RULES} - HERALD_ONLY


def test_amtool_checks_the_alertmanager_configuration() -> None:
    output = run(
        binary("amtool", "prometheus-alertmanager"),
        "check-config",
        str(DEPLOY / "alertmanager" / "alertmanager.yml"),
    )
    assert "SUCCESS" in output
