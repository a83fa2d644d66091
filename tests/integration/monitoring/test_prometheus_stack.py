"""The real thing: Prometheus scraping a running Herald.

One stack for the module: ``herald worker`` (prefork, metrics port), ``herald beat`` (short
intervals, metrics port), ``herald api`` under uvicorn, all on the test database, the test
broker and the provider sandbox, and Debian's Prometheus scraping the three with the metrics
token. Posts are published in two waves through the worker to the sandbox (one network fails
once, one token is due for a refresh), so every series has samples and every rate an increase.
Then Prometheus' HTTP API must find every series of the monitoring contract, and every PromQL
expression of the Grafana dashboard must return data.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from herald.celery_app import QUEUES, app
from herald.models import Integration, Post, PostStatus, utcnow
from herald.sandbox import SandboxClient, SandboxServer
from herald.security.crypto import KeyRing
from herald.settings import Settings, get_settings
from herald.tokens.connect import account_from, connect_integration, tokens_from
from tests.fixtures.database import service_session, truncate_all
from tests.fixtures.factories import make_post, make_workspace
from tests.fixtures.monitoring import (
    HERALD,
    Service,
    eventually,
    free_port,
    promtool_check_metrics,
    require_binary,
)
from tests.fixtures.processes import worker_env
from tests.integration.monitoring.test_deploy_config import dashboard_expressions

TOKEN = "stack-metrics-token"
NETWORKS = ("mastodon", "bluesky", "x")

#: Every series of the monitoring contract (MONITORING-CONTRACT.md), by the process serving it.
WORKER_SERIES = (
    "herald_tasks_sent_total",
    "herald_tasks_received_total",
    "herald_tasks_started_total",
    "herald_tasks_succeeded_total",
    "herald_tasks_failed_total",
    "herald_tasks_retried_total",
    "herald_tasks_rejected_total",
    "herald_tasks_revoked_total",
    "herald_tasks_lost_total",
    "herald_task_runtime_seconds_bucket",
    "herald_task_queue_wait_seconds_bucket",
    "herald_publish_attempts_total",
    "herald_publish_latency_seconds_bucket",
    "herald_publish_errors_total",
    "herald_token_refreshes_total",
    "herald_publish_delay_seconds_bucket",
)
API_SERIES = (
    "herald_posts",
    "herald_posts_due_unqueued",
    "herald_posts_oldest_due_age_seconds",
    "herald_queue_length",
    "herald_queue_heartbeat_age_seconds",
    "herald_workers_seen",
    "herald_periodic_job_last_success_timestamp_seconds",
    "herald_alerts",
)
#: Grafana's variables as Grafana substitutes them (a rate interval of a few minutes, as for a
#: dashboard over the last day), long enough that both waves stay inside every rate window
#: for the whole module; ``$provider`` on "All".
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "10m",
    "$provider": ".*",
}


@dataclass
class Stack:
    prometheus: str
    api: str
    worker: str
    beat: str
    services: list[Service]
    integrations: list[Integration]
    last_wave: float = 0.0  # time.monotonic() of the last wave published

    def publish_wave(self, size: int = 6) -> None:
        """Publish `size` posts and wait until every one of them is published."""
        before = _published()
        _wave(self.integrations, size)
        eventually(
            _published, until=lambda n: n == before + size, timeout=90, what="a wave of posts"
        )
        self.last_wave = time.monotonic()

    def keep_rates_fresh(self) -> None:
        """Publish a new wave once the last nears the edge of the panels' 5-minute windows.

        The panels are rates over [5m]: on a slow machine the module outlasts that window,
        a counter that stopped moving has a rate of 0, and a ratio of two such rates is NaN.
        """
        if time.monotonic() - self.last_wave > 120:
            self.publish_wave()

    def wait_for_published_count(self, count: int) -> None:
        """Wait until Prometheus' latest scrape of the worker counts ``count`` published
        attempts (0 included: the series exist before the first post)."""
        result = eventually(
            lambda: self.query('sum(herald_publish_attempts_total{outcome="published"})'),
            until=lambda result: bool(result) and float(result[0]["value"][1]) >= count,
            timeout=60,
            what=f"a scrape counting {count} published attempts",
        )
        assert float(result[0]["value"][1]) == count

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _connect(sandbox: SandboxClient, workspace_id: uuid.UUID, network: str) -> Integration:
    created = sandbox.create_account(network)
    with service_session() as session:
        return connect_integration(
            session,
            workspace_id=workspace_id,
            provider=network,
            account=account_from(created),
            tokens=tokens_from(created),
            keys=KeyRing.from_settings(get_settings()),
        )


def _published() -> int:
    with service_session() as session:
        count = session.scalar(
            select(func.count()).select_from(Post).where(Post.status == PostStatus.PUBLISHED)
        )
    return int(count or 0)


def _wave(integrations: list[Integration], size: int) -> None:
    with service_session() as session:
        for i in range(size):
            make_post(
                session,
                integrations[i % len(integrations)],
                content=f"monitoring wave post {uuid.uuid4().hex[:8]}",
                scheduled_at=utcnow() - timedelta(seconds=2),
            )


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Service:
    return Service(name, argv, env, workdir)


@pytest.fixture(scope="module")
def stack(
    engine: Engine, sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prometheus_bin = require_binary("prometheus", "apt-get install prometheus")
    workdir = tmp_path_factory.mktemp("stack")
    sandbox = SandboxClient(sandbox_server.url)
    sandbox.reset()
    app.control.purge()
    settings = Settings(
        env="development",
        provider_timeout_s=2.0,
        provider_connect_timeout_s=2.0,
        publish_backoff_s=0.2,
        publish_backoff_max_s=0.5,
    ).with_sandbox(sandbox_server.url)
    with service_session() as session:
        workspace_id = make_workspace(session).id
    integrations = [_connect(sandbox, workspace_id, network) for network in NETWORKS]
    with service_session() as session:  # due for a refresh: beat's refresh_expiring takes it
        session.execute(
            Integration.__table__.update()
            .where(Integration.provider == "x")
            .values(token_expires_at=utcnow() + timedelta(minutes=5))
        )
    # X has no idempotency key, so the 503 is not retried inside the call: a publish error.
    sandbox.inject("x", "error", status=503, method="POST", path="/2/tweets", times=1)

    ports = {name: free_port() for name in ("api", "worker", "beat", "prometheus")}
    common = {
        "HERALD_METRICS_TOKEN": TOKEN,
        "HERALD_METRICS_HOST": "127.0.0.1",
        "HERALD_METRICS_DIR": str(workdir / "metrics"),
        "HERALD_DISPATCH_INTERVAL_S": "0.5",
        "HERALD_HEARTBEAT_INTERVAL_S": "1",
        "HERALD_HEARTBEAT_MAX_AGE_S": "30",
        "HERALD_TOKEN_REFRESH_INTERVAL_S": "2",
        "HERALD_SWEEP_INTERVAL_S": "5",
    }
    env = worker_env(settings, **common)
    services = [
        _start(
            "worker",
            [
                HERALD,
                "worker",
                "-Q",
                ",".join(QUEUES),
                "-c",
                "2",
                "-n",
                "stack@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            {**env, "HERALD_METRICS_PORT": str(ports["worker"])},
            workdir,
        ),
        _start(
            "beat",
            [HERALD, "beat", "--schedule", str(workdir / "beat-schedule")],
            {**env, "HERALD_METRICS_PORT": str(ports["beat"])},
            workdir,
        ),
        _start("api", [HERALD, "api", "--port", str(ports["api"])], env, workdir),
    ]
    scrape = {"scrape_interval": "1s", "authorization": {"credentials": TOKEN}}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                **scrape,
                "job_name": f"herald-{name}",
                "static_configs": [{"targets": [f"127.0.0.1:{ports[name]}"]}],
            }
            for name in ("api", "worker", "beat")
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    services.append(
        _start(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            ],
            dict(os.environ),
            workdir,
        )
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    stack = Stack(
        urls["prometheus"], urls["api"], urls["worker"], urls["beat"], services, integrations
    )
    try:
        for service, url in zip(
            services,
            (
                f"{urls['worker']}/healthz",
                f"{urls['beat']}/healthz",
                f"{urls['api']}/healthz",
                f"{urls['prometheus']}/-/ready",
            ),
            strict=True,
        ):
            service.wait_http(url, timeout=90)
        # Every rate needs an increase between two scrapes. The worker creates its attempt
        # series at 0 when it is ready: wait for Prometheus to hold them, then for it to hold all
        # of the first wave, before the second.
        stack.wait_for_published_count(0)
        stack.publish_wave()
        stack.wait_for_published_count(_published())
        stack.publish_wave()
        eventually(
            lambda: stack.query('herald_token_refreshes_total{outcome="refreshed"}'),
            timeout=60,
            what="the token refresh to be scraped",
        )
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        app.control.purge()
        sandbox.reset()
        sandbox.close()
        truncate_all()


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def test_prometheus_finds_every_series_of_the_contract(stack: Stack) -> None:
    for name in (*WORKER_SERIES, *API_SERIES):
        eventually(lambda n=name: stack.query(n), timeout=30, what=f"series {name}")
    jobs = {s["metric"]["job"] for s in stack.query("herald_tasks_sent_total")}
    assert jobs == {"herald-worker", "herald-beat"}  # the dispatcher sends, beat sends ticks
    # Scraped every second: the last wave's count may be one scrape away.
    stack.wait_for_published_count(_published())
    errors = stack.query('herald_publish_errors_total{provider="x"}')
    assert errors
    # No exposed label collides with a target label (Prometheus would rename it exported_*).
    assert stack.query('{__name__=~"herald_.+", exported_job!=""}') == []
    assert stack.query('{__name__=~"herald_.+", exported_instance!=""}') == []
    # Every target up. A scrape has one interval (1 s) to answer: on a loaded machine one can
    # miss it, which the next corrects; a target that stays down fails here.
    every_target_up = {"herald-api": "1", "herald-worker": "1", "herald-beat": "1"}
    eventually(
        lambda: {s["metric"]["job"]: s["value"][1] for s in stack.query("up")},
        until=lambda up: up == every_target_up,
        timeout=30,
        what="every target up",
    )


def test_heartbeats_travel_from_beat_through_the_worker_to_prometheus(stack: Stack) -> None:
    ages = eventually(
        lambda: stack.query("herald_queue_heartbeat_age_seconds"),
        until=lambda r: len(r) == len(QUEUES) and all(float(s["value"][1]) < 30 for s in r),
        timeout=30,
        what="a fresh heartbeat on every queue",
    )
    assert {s["metric"]["queue"] for s in ages} == set(QUEUES)
    assert stack.query("herald_workers_seen")[0]["value"][1] == "1"
    jobs = stack.query("herald_periodic_job_last_success_timestamp_seconds > 0")
    assert "herald.posts.dispatch_due" in {s["metric"]["task"] for s in jobs}


@pytest.mark.parametrize(("panel", "expr"), dashboard_expressions())
def test_every_dashboard_query_returns_data(stack: Stack, panel: str, expr: str) -> None:
    query = expr
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"{panel}: an unsubstituted variable in {query}"
    stack.keep_rates_fresh()
    eventually(
        lambda: stack.query(query),
        until=_finite,
        # rate() needs two scrapes inside its window: on a loaded machine that takes a while.
        timeout=60,
        what=f"data for panel {panel!r}: {query}",
    )


def test_each_exposition_passes_promtool(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for url in (stack.api, stack.worker, stack.beat):
        response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 200, url
        promtool_check_metrics(response.text)
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
