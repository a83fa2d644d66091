"""Every task goes to the queue of its workload, and every queue has a consumer wherever
Herald describes how to run it (``herald worker``'s default, compose.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from herald.celery_app import QUEUES, app
from herald.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("herald.posts.sweep_stuck", "sweep"),
        ("herald.posts.dispatch_due", "default"),
        ("herald.posts.schedule", "default"),
        ("herald.posts.publish", "publish"),
        ("herald.tokens.refresh", "tokens"),
    ],
)
def test_each_task_is_routed_to_its_workloads_queue(task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_herald_worker_consumes_every_queue_by_default() -> None:
    usage = CliRunner().invoke(cli, ["worker", "--help"]).output
    default = usage.split("[default:", 1)[1].split("]", 1)[0].strip()
    assert sorted(default.split(",")) == sorted(QUEUES)


def test_compose_runs_a_worker_for_every_queue() -> None:
    services = YAML(typ="safe").load((ROOT / "compose.yaml").read_text())["services"]
    consumed: set[str] = set()
    for service in services.values():
        command = service.get("command") or []
        if command[:1] == ["worker"]:
            consumed |= set(command[command.index("--queues") + 1].split(","))
    assert consumed == set(QUEUES)
