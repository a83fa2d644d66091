"""Queue lengths as the broker reports them: Redis (LLEN under the deployment's key prefix)
and RabbitMQ (a passive declare's message count)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue

from herald.celery_app import QUEUES, broker_connection
from herald.settings import get_settings
from herald.telemetry.broker import probe
from tests.fixtures.monitoring import free_port

AMQP_URL = os.environ.get("HERALD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def test_redis_queue_lengths_count_this_deployments_messages_only(celery_app: Any) -> None:
    for priority in (None, None, 6):  # a prioritised message waits in a list of its own
        celery_app.send_task(
            "herald.monitoring.heartbeat",
            kwargs={"queue": "alerts"},
            queue="alerts",
            priority=priority,
        )
    settings = get_settings()
    mine = probe(lambda: broker_connection(settings), QUEUES)
    assert mine.reachable
    assert mine.queue_lengths == {"default": 0, "publish": 0, "sweep": 0, "tokens": 0, "alerts": 3}
    assert mine.latency_s is not None
    other = settings.model_copy(update={"broker_key_prefix": f"someone-else-{uuid.uuid4().hex}:"})
    theirs = probe(lambda: broker_connection(other), QUEUES)
    assert theirs.queue_lengths["alerts"] == 0


def test_an_unreachable_broker_is_reported_not_raised() -> None:
    settings = get_settings().model_copy(
        update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    result = probe(lambda: broker_connection(settings), QUEUES)
    assert result.reachable is False
    assert result.queue_lengths == {}
    assert result.error


@pytest.fixture
def rabbitmq() -> str:
    try:
        with Connection(AMQP_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        message = (
            f"RabbitMQ is not reachable at {AMQP_URL} ({exc}); apt-get install rabbitmq-server"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


def test_rabbitmq_queue_lengths_come_from_a_passive_declare(rabbitmq: str) -> None:
    name = f"herald-probe-{uuid.uuid4().hex[:8]}"
    missing = f"herald-probe-missing-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, auto_delete=True)
    with Connection(rabbitmq) as connection:
        producer = Producer(connection.channel(), exchange=queue.exchange, routing_key=name)
        queue(connection.default_channel).declare()
        for i in range(4):
            producer.publish({"n": i}, declare=[queue], serializer="json")
        try:
            result = probe(lambda: Connection(rabbitmq, connect_timeout=3), [missing, name])
        finally:
            queue(connection.default_channel).delete()
    assert result.reachable
    assert result.queue_lengths == {missing: 0, name: 4}
