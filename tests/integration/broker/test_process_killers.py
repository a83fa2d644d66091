"""A message whose every run kills the pool process running it: refused after
``HERALD_TASK_MAX_PROCESS_LOSSES`` runs (a dead letter, acked), and the worker goes on. Without
the bound Celery puts it back after each loss: on Redis for ever (RabbitMQ's delivery limit
would drop it, unrecorded, after ten). The bound is the worker's own, the same on either
broker; this runs on Redis, where nothing else would stop it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from herald.models import DeadLetter
from herald.settings import Settings
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.integration.broker.killer_tasks import KILL_OWN_PROCESS


def letters_for(task_id: str) -> list[DeadLetter]:
    with service_session() as s:
        return list(s.scalars(select(DeadLetter).where(DeadLetter.task_id == task_id)))


@pytest.mark.slow
def test_a_message_that_keeps_killing_its_process_is_refused_after_the_bound(
    committed: Engine,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    worker = start_worker_process(
        pub_settings,
        name="killed",
        broker=redis_broker,
        include=("tests.integration.broker.killer_tasks",),
        HERALD_TASK_MAX_PROCESS_LOSSES="2",
    )
    sent = redis_broker.app.send_task(
        KILL_OWN_PROCESS,
        kwargs={"runs": str(runs)},
        queue="default",
        headers={"x_correlation_id": "killer-correlation"},
    )

    (letter,) = eventually(lambda: letters_for(sent.id), 60, "the killer to be refused")
    assert letter.task_name == KILL_OWN_PROCESS
    assert letter.queue == "default"
    assert "killed the pool process running it 2 times" in letter.reason
    assert letter.correlation_id == "killer-correlation"
    assert letter.payload == {"runs": str(runs)}
    pids = runs.read_text().split()
    assert len(set(pids)) == len(pids) == 2  # two runs, each in a process of its own
    assert worker.alive()
    # Acked: nothing comes back (another run would append another pid).
    eventually(
        lambda: redis_broker.queue_sizes()["default"],
        10,
        "the queue to drain",
        until=lambda n: n == 0,
    )
    worker.stop()  # a warm shutdown gives back what is unacked: nothing is
    assert redis_broker.queue_sizes()["default"] == 0
    assert len(runs.read_text().split()) == 2
