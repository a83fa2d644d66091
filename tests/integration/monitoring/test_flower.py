"""Flower, the Celery UI operators keep open, sees Herald's tasks: real Flower with its
authentication on, against a real worker on the real broker, read through Flower's HTTP API.

(``herald flower`` refuses to start without ``HERALD_FLOWER_BASIC_AUTH`` outside development:
the test gives it the operator's credentials, as a deployment does.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx

from tests.fixtures.monitoring import HERALD, ROOT, Service, eventually, free_port

OPERATOR = ("operator", "flower-test-password")
HEARTBEAT = "herald.monitoring.heartbeat"


def test_flower_shows_heralds_tasks_by_name_with_their_states(
    services: Callable[..., Service], celery_app: Any, committed: Any
) -> None:
    env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    port = free_port()
    services(
        "worker",
        [
            HERALD,
            "worker",
            "-Q",
            "default",
            "-c",
            "1",
            "-n",
            "flower-test@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )
    flower = services(
        "flower",
        [HERALD, "flower", "--port", str(port)],
        {**env, "HERALD_FLOWER_BASIC_AUTH": ":".join(OPERATOR)},
    )
    url = f"http://127.0.0.1:{port}"
    flower.wait_http(f"{url}/healthcheck")
    assert httpx.get(f"{url}/api/tasks", timeout=5).status_code == 401
    wrong = httpx.get(f"{url}/api/tasks", auth=("operator", "guess"), timeout=5)
    assert wrong.status_code == 401

    def api(path: str) -> Any:
        response = httpx.get(f"{url}{path}", auth=OPERATOR, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    # Flower turns task events on in the worker it finds; wait until it knows the worker.
    eventually(
        lambda: api("/api/workers?refresh=1"),
        until=lambda workers: any(name.startswith("flower-test@") for name in workers),
        timeout=60,
        what="Flower to see the worker",
    )

    def tasks() -> dict[str, Any]:
        # Events are on only once the worker hears Flower: send until Flower has seen both.
        celery_app.send_task(HEARTBEAT, kwargs={"queue": "default"}, queue="default")
        celery_app.send_task(HEARTBEAT, kwargs={"queue": "default", "bogus": 1}, queue="default")
        found: dict[str, Any] = api("/api/tasks")
        return found

    seen = eventually(
        tasks,
        until=lambda found: (
            {"SUCCESS", "FAILURE"} <= {t["state"] for t in found.values() if t["name"] == HEARTBEAT}
        ),
        timeout=60,
        every=1.0,
        what="a succeeded and a rejected heartbeat in Flower",
    )
    failed = [t for t in seen.values() if t["name"] == HEARTBEAT and t["state"] == "FAILURE"]
    assert "PayloadRejected" in failed[0]["exception"]
    assert all(t["worker"].startswith("flower-test@") for t in seen.values() if t.get("worker"))
