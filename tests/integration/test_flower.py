"""`herald flower` for real: a Flower subprocess on a free port, watching a real worker on the
real Redis (this run's key prefix). It asks for credentials, its API works with them and sees
Herald's tasks, it listens on loopback only, and when it stops the workers' task events are
switched off again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy.engine import Engine

from herald.settings import get_settings
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker

CREDENTIALS = ("flower-admin", "a-long-flower-password")
HERALD = Path(sys.executable).parent / "herald"


def require_flower() -> None:
    try:
        import flower  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("Flower is not installed: `make install` installs it with Herald")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses listening on ``port``, from the kernel's socket table."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        hex_address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            octets = bytes.fromhex(hex_address)[::-1]
            addresses.add(".".join(str(b) for b in octets))
    return addresses


class FlowerProcess:
    def __init__(self, port: int, log: Path, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [str(HERALD), "flower", "--port", str(port)],
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flower exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(answers, 60, what="Flower to answer")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[FlowerProcess]:
    require_flower()
    process = FlowerProcess(
        free_port(),
        tmp_path / "flower.log",
        HERALD_FLOWER_BASIC_AUTH=":".join(CREDENTIALS),
        HERALD_LOG_LEVEL="INFO",
    )
    yield process
    process.stop()


def task_events_state(app: Celery, worker: str) -> str:
    """Whether ``worker`` sends task events, in its own words: asking it to stop is answered
    with "task events disabled" when they were on, "already disabled" when they were off."""
    [reply] = app.control.broadcast(
        "disable_events", destination=[worker], reply=True, timeout=10, limit=1
    )
    return str(reply[worker]["ok"])


def test_flower_requires_credentials_serves_its_api_with_them_and_disables_events_on_exit(
    committed: Engine, celery_app: Celery, start_worker_process: StartWorker, flower: Any
) -> None:
    worker = start_worker_process(get_settings(), name="flowerwatched", queues="default")
    worker_name = worker.nodename
    flower.wait_ready()
    auth = httpx.BasicAuth(*CREDENTIALS)

    assert listening_addresses(flower.port) == {"127.0.0.1"}
    assert httpx.get(f"{flower.url}/api/workers").status_code == 401
    assert (
        httpx.get(f"{flower.url}/", auth=httpx.BasicAuth("flower-admin", "wrong")).status_code
        == 401
    )

    def herald_tasks_registered() -> bool:
        workers = httpx.get(f"{flower.url}/api/workers?refresh=1", auth=auth, timeout=30).json()
        return "herald.posts.schedule" in workers.get(worker_name, {}).get("registered", [])

    eventually(herald_tasks_registered, 60, what="Flower's API to list the worker's Herald tasks")

    def a_herald_task_seen() -> bool:
        # Flower switches events on every few seconds: send until one is seen.
        celery_app.send_task("herald.posts.dispatch_due")
        tasks = httpx.get(f"{flower.url}/api/tasks", auth=auth, timeout=10).json()
        return any(task.get("name") == "herald.posts.dispatch_due" for task in tasks.values())

    eventually(a_herald_task_seen, 60, what="Flower to see a Herald task through its events")

    assert flower.stop() == 0
    assert task_events_state(celery_app, worker_name) == "task events already disabled"
    assert "flower.events_disabled" in flower.log.read_text()
    assert worker.proc.poll() is None


def test_flower_refuses_to_start_without_credentials_outside_development(
    tmp_path: Path,
) -> None:
    require_flower()
    env = {k: v for k, v in os.environ.items() if k != "HERALD_FLOWER_BASIC_AUTH"}

    result = subprocess.run(
        [str(HERALD), "flower", "--port", str(free_port())],
        env={**env, "HERALD_ENV": "production"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "HERALD_FLOWER_BASIC_AUTH" in result.stderr
