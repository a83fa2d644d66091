"""One fixture, two engines: a time series of publish attempt outcomes is fed to Herald's
"Failed jobs spike" rule and, as the counter Prometheus would scrape, to the PromQL rule of
deploy/prometheus/rules/herald.yml through `promtool test rules`. Both must reach the same
verdict: promtool is told to expect what Herald decided, and fails if PromQL disagrees."""

from __future__ import annotations

import json
import subprocess
from itertools import accumulate
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.alerts.defaults import install
from herald.alerts.engine import evaluate_rule
from herald.models import AlertRule, AlertStatus
from herald.settings import get_settings
from tests.fixtures.database import service_session
from tests.fixtures.external import binary
from tests.integration.alerts.conftest import alerts_of, at, attempts_at

RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "rules" / "herald.yml"
SPIKE = {
    "exp_labels": {"severity": "error", "herald_rule": "Failed jobs spike"},
    "exp_annotations": {
        "summary": "More than 20% of publish attempts failed, over more than 10 attempts.",
        "runbook_url": "docs/alerts.md#failed-jobs-spike",
    },
}


def _minutes(**spans: tuple[range, int]) -> dict[int, dict[str, int]]:
    """{minute: {outcome: count}} from outcome=(minutes, count per minute)."""
    series: dict[int, dict[str, int]] = {m: {} for m in range(1, 61)}
    for outcome, (minutes, count) in spans.items():
        for minute in minutes:
            series[minute][outcome] = count
    return series


HOUR = range(1, 61)
FIXTURES = {
    "spike": _minutes(published=(HOUR, 10), failed=(HOUR, 3)),  # 23 %
    "calm": _minutes(published=(HOUR, 10), failed=(HOUR, 2)),  # 17 %
    "too few attempts": _minutes(failed=(range(58, 61), 2), published=(range(60, 61), 2)),
    "early burst": _minutes(failed=(range(1, 2), 200), published=(range(2, 61), 10)),  # 25 %
    "retries count as failures": _minutes(
        published=(HOUR, 6), transient=(HOUR, 1), rate_limited=(HOUR, 1)
    ),
}


def herald_verdict(series: dict[int, dict[str, int]]) -> bool:
    with service_session() as session:
        install(session)
        rule_id = session.scalars(
            select(AlertRule.id).where(AlertRule.name == "Failed jobs spike")
        ).one()
    for minute, counts in series.items():
        outcomes = [o for o, n in counts.items() for _ in range(n)]
        if outcomes:
            attempts_at(minute, outcomes)
    with service_session() as session:
        evaluate_rule(session, rule_id, get_settings(), now=at(60))
    return any(a.status is AlertStatus.FIRING for a in alerts_of(rule_id))


def promql_agrees(series: dict[int, dict[str, int]], fires: bool, tmp_path: Path) -> str:
    outcomes = sorted({o for counts in series.values() for o in counts})
    input_series = [
        {
            "series": f'herald_publish_attempts_total{{provider="mastodon",outcome="{o}"}}',
            "values": " ".join(
                str(v) for v in accumulate([0] + [series[m].get(o, 0) for m in range(1, 61)])
            ),
        }
        for o in outcomes
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {
                        "eval_time": "60m",
                        "alertname": "FailedJobsSpike",
                        "exp_alerts": [SPIKE] if fires else [],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "parity_test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    result = subprocess.run(
        [binary("promtool", "prometheus"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"PromQL disagrees with Herald:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_herald_and_promql_reach_the_same_verdict(
    name: str, alerting: Engine, tmp_path: Path
) -> None:
    binary("promtool", "prometheus")
    series = FIXTURES[name]
    fires = herald_verdict(series)
    assert fires is (name in {"spike", "early burst", "retries count as failures"})
    assert "SUCCESS" in promql_agrees(series, fires, tmp_path)
