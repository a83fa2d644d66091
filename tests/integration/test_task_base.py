"""What the task base promises, on a real worker and a real broker: sends only after commit,
retries bounded in number and in countdown, and one concise line per retry."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from herald import db
from herald.celery_app import app
from herald.settings import Settings
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.brokers import Broker
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker, WorkerProcess
from tests.fixtures.servers import free_port
from tests.integration import flow_tasks


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    flow_tasks.markers.clear()
    flow_tasks.flaky_runs.clear()


def test_a_rolled_back_task_sends_nothing(worker: Any) -> None:
    flow_tasks.enqueue_then.apply_async(kwargs={"marker": "rolled-back", "fail": True})
    flow_tasks.enqueue_then.apply_async(kwargs={"marker": "committed", "fail": False})
    # One worker, one queue, in order: had the failed run sent its message, it would have run
    # before the committed run's.
    eventually(lambda: "committed" in flow_tasks.markers, 20, "the committed run's message")
    assert flow_tasks.markers == ["committed"]


def test_retries_stop_at_max_retries_with_countdowns_inside_the_policy_bounds(
    worker: Any, log_lines: list[dict[str, Any]]
) -> None:
    policy = flow_tasks.FLAKY_POLICY
    result = flow_tasks.always_flaky.apply_async()

    def failed() -> list[dict[str, Any]]:
        return [
            line
            for line in log_lines
            if line.get("event") == "task.failed" and line.get("task_id") == result.id
        ]

    eventually(failed, 30, "the task to fail after its last retry")
    runs = flow_tasks.flaky_runs
    assert [run["retries"] for run in runs] == list(range(policy.max_retries + 1))
    for previous, run in itertools.pairwise(runs):
        # The retry was due ``countdown`` seconds after the run that raised: within
        # [backoff/2, min(backoff_max, backoff·2^retries)] (full jitter, bounded).
        countdown = datetime.fromisoformat(run["eta"]).timestamp() - previous["at"]
        ceiling = min(policy.backoff_max_s, policy.backoff_s * 2 ** previous["retries"])
        assert policy.backoff_s / 2 <= countdown <= ceiling + 0.05, (previous, run, countdown)
        assert run["at"] >= previous["at"] + policy.backoff_s / 2
    retrying = [
        line
        for line in log_lines
        if line.get("event") == "task.retrying" and line.get("task_id") == result.id
    ]
    assert len(retrying) == policy.max_retries
    (final,) = failed()
    assert final["error_type"] == "AlwaysFlaky"
    assert "exception" not in final  # an exhausted, declared retry is no bug: no traceback


def log_of(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's log lines, parsed (a line that is not JSON kept as ``{"text": …}``)."""
    parsed = []
    for line in worker.log.read_text(errors="replace").splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            parsed.append({"text": line})
    return parsed


def retry_lines(worker: WorkerProcess, task_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_of(worker)
        if line.get("event") == "task.retrying" and line.get("task_id") == task_id
    ]


def assert_concise(log: str, lines: list[dict[str, Any]]) -> None:
    """``lines`` are short; the worker's ``log`` has no SQL and no traceback."""
    for line in lines:
        assert line["error_type"] == "OperationalError", line
        assert len(line["error"]) <= 200, line
        assert len(json.dumps(line)) < 600, line
    assert "[SQL" not in log
    assert "SELECT" not in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_database_connection_the_server_ended_is_replaced_before_the_next_task_uses_it(
    pub_settings: Settings, start_worker_process: StartWorker, committed: Engine
) -> None:
    """As after a Postgres restart or failover: the worker's pooled connection is dead, and the
    next task runs on a fresh one, with no failed attempt and no retry."""
    worker = start_worker_process(pub_settings, name="killed-connection", concurrency=1)
    warm = app.send_task("herald.posts.publish", kwargs={"post_id": str(uuid.uuid4())})
    eventually(lambda: warm.id in worker.log.read_text(), 30, "the first publish to run")
    # Every connection to this run's database but ours goes, the worker's pooled one too; the
    # timeout makes each call return once its backend has gone (its goodbye sent).
    admin = create_engine(TEST_DATABASE_URL, poolclass=NullPool)  # may end any role's backend
    with admin.begin() as conn:
        ended = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        assert any(ended)
    admin.dispose()
    committed.dispose()  # this process's pooled connections were among them
    db.get_service_engine().dispose()

    hit = app.send_task("herald.posts.publish", kwargs={"post_id": str(uuid.uuid4())})
    eventually(
        lambda: any(
            line.get("event") == "publish.unknown_post" and line.get("task_id") == hit.id
            for line in log_of(worker)
        ),
        30,
        "the publish to run",
    )
    assert retry_lines(worker, hit.id) == []
    assert "terminating connection" not in worker.log.read_text(errors="replace")


@pytest.mark.slow
def test_a_database_away_logs_one_concise_line_per_retry(
    pub_settings: Settings, start_worker_process: StartWorker, broker: Broker
) -> None:
    """A worker whose database is away (a closed port): each retry is one short line. On
    RabbitMQ the retries' countdowns go through native delayed delivery (quorum queues)."""
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/herald"
    worker = start_worker_process(
        pub_settings,
        name="no-database",
        broker=broker,
        HERALD_DATABASE_URL=closed,
        HERALD_SERVICE_DATABASE_URL=closed,
    )
    task_id = f"outage-{uuid.uuid4()}"
    broker.app.send_task(
        "herald.posts.publish", kwargs={"post_id": str(uuid.uuid4())}, task_id=task_id
    )

    eventually(lambda: len(retry_lines(worker, task_id)) >= 2, 30, "two retries of the publish")
    # Read before stopping: the test's SIGTERM to the pool children has tracebacks of its own.
    log = worker.log.read_text(errors="replace")
    lines = retry_lines(worker, task_id)
    assert all("connection" in line["error"].lower() for line in lines), lines
    assert_concise(log, lines)
    # Nothing else is said about this task: no Celery retry line, no traceback, no repeat.
    # (OpenTelemetry's Celery instrumentation warns once per retry on RabbitMQ that Celery's
    # delay Exchange is no span attribute value: the tracing's business, not a retry line.)
    about_the_task = [
        line
        for line in log_of(worker)
        if task_id in json.dumps(line) and line.get("logger") != "opentelemetry.attributes"
    ]
    assert all(line.get("event") == "task.retrying" for line in about_the_task), about_the_task
