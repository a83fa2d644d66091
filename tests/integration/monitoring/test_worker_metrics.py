"""``herald worker``'s metrics port: a real worker node (prefork), scraped over HTTP.

Its pool processes record in multiprocess mode; the node's exposition adds them up, keeps the
counts of a pool process that died, and drops that process's live gauge.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.models import Heartbeat
from herald.providers.registry import provider_names
from herald.telemetry.figures import PUBLISH_OUTCOMES
from tests.fixtures.database import service_session
from tests.fixtures.monitoring import (
    HERALD,
    ROOT,
    Service,
    eventually,
    free_port,
    parse_exposition,
    promtool_check_metrics,
    total,
)

TOKEN = "scrape-secret-for-tests"
HEARTBEAT = "herald.monitoring.heartbeat"


def _pool_children(worker: Service) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


def test_worker_node_adds_up_its_pool_processes_and_forgets_dead_ones(
    services: Callable[..., Service], committed: Engine, celery_app: Any, tmp_path: Path
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    stale = metrics_dir / "node-999999"  # a node that no longer runs left its files
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"\0" * 16)
    env = {
        **os.environ,
        "HERALD_METRICS_PORT": str(port),
        "HERALD_METRICS_HOST": "127.0.0.1",
        "HERALD_METRICS_DIR": str(metrics_dir),
        "HERALD_METRICS_TOKEN": TOKEN,
        "HERALD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    worker = services(
        "worker",
        [
            HERALD,
            "worker",
            "-Q",
            "default,publish",
            "-c",
            "2",
            "-n",
            "metrics@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    worker.wait_http(f"{url}/healthz")
    assert not stale.exists()
    node_dirs = [p.name for p in metrics_dir.iterdir()]
    assert node_dirs == [f"node-{worker.proc.pid}"]

    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401

    def scrape() -> dict[Any, float]:
        response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return parse_exposition(response.text)

    def send(count: int) -> None:
        for i in range(count):
            queue = ("default", "publish")[i % 2]
            celery_app.send_task(HEARTBEAT, kwargs={"queue": queue}, queue=queue)

    def succeeded(n: int) -> dict[Any, float]:
        # A scrape reads the processes' files one after another, not at one instant: a task
        # finishing meanwhile can be in one series and not yet in another. Wait for all.
        series = ("herald_tasks_succeeded_total", "herald_task_runtime_seconds_count")
        return eventually(
            scrape,
            until=lambda s: all(total(s, name, task=HEARTBEAT) >= n for name in series),
            what=f"{n} heartbeats counted",
        )

    # Before any post: every provider's attempt series exists at 0, so the first post after a
    # restart is an increase rate() and the failure-ratio alerts can see.
    expected = {(p, o) for p in provider_names() for o in PUBLISH_OUTCOMES}

    def attempt_series(samples: dict[Any, float]) -> set[tuple[str, str]]:
        return {
            (labels["provider"], labels["outcome"])
            for (name, frozen), value in samples.items()
            if name == "herald_publish_attempts_total" and value == 0
            for labels in (dict(frozen),)
        }

    eventually(
        scrape,
        until=lambda s: attempt_series(s) == expected,
        what="every provider's attempt series at 0",
    )

    send(10)
    succeeded(10)
    children = eventually(
        lambda: _pool_children(worker), until=lambda c: len(c) == 2, what="two pool processes"
    )

    # A pool process dies hard; the pool replaces it. Its counts stay in the node's totals and
    # its live gauge goes, so the node still reports two processes.
    os.kill(children[0], signal.SIGKILL)
    node_dir = metrics_dir / f"node-{worker.proc.pid}"
    (replacement,) = eventually(
        lambda: set(_pool_children(worker)) - set(children), what="a replacement pool process"
    )
    eventually(
        (node_dir / f"gauge_livesum_{replacement}.db").exists,
        what="the replacement process to start recording",
    )
    send(10)
    samples = succeeded(20)
    assert total(samples, "herald_tasks_succeeded_total", task=HEARTBEAT) == 20
    assert total(samples, "herald_tasks_started_total", task=HEARTBEAT) == 20
    assert total(samples, "herald_tasks_received_total", task=HEARTBEAT) == 20
    assert total(samples, "herald_tasks_succeeded_total", task=HEARTBEAT, queue="publish") == 10
    assert total(samples, "herald_task_runtime_seconds_count", task=HEARTBEAT) == 20
    assert total(samples, "herald_task_queue_wait_seconds_count", queue="default") == 10
    assert total(samples, "herald_worker_pool_processes") == 2
    assert not (node_dir / f"gauge_livesum_{children[0]}.db").exists()
    writers = {p.name.rsplit("_", 1)[1] for p in node_dir.glob("counter_*.db")}
    assert len(writers) >= 3  # the parent (received) and at least two pool processes

    # Refused messages: a bad payload and a task nobody knows.
    celery_app.send_task(HEARTBEAT, kwargs={"queue": "default", "extra": 1}, queue="default")
    celery_app.send_task("herald.no.such.task", kwargs={}, queue="default")

    samples = eventually(
        scrape,
        until=lambda s: total(s, "herald_tasks_rejected_total") >= 2,
        what="two rejected messages",
    )
    assert total(samples, "herald_tasks_rejected_total", task=HEARTBEAT) == 1
    assert total(samples, "herald_tasks_rejected_total", task="unregistered") == 1

    with service_session() as session:
        beats = {b.queue: b for b in session.scalars(select(Heartbeat))}
    assert set(beats) == {"default", "publish"}
    assert all(b.worker.startswith("metrics@") for b in beats.values())
    promtool_check_metrics(
        httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    )
