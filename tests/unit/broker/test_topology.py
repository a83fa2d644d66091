"""The broker-dependent Celery settings: each broker gets what it needs and nothing it cannot
use, and a worker on the in-process broker is told it will hear from no one."""

from __future__ import annotations

import pytest

from herald.broker.topology import broker_kind, deliverable_countdown, memory_broker_warning
from herald.celery_app import QUEUES, celery_config
from herald.settings import Settings


def config_for(url: str) -> dict[str, object]:
    return celery_config(Settings(env="development", broker_url=url))


def test_redis_gets_the_guarded_transport_and_a_visibility_timeout() -> None:
    config = config_for("redis://127.0.0.1:6379/0")
    assert config["broker_transport"] == "herald.broker.redis:Transport"
    options = config["broker_transport_options"]
    assert options["visibility_timeout"] == 3600  # type: ignore[index]
    assert "confirm_publish" not in options  # type: ignore[operator]
    assert all(q.queue_arguments is None for q in config["task_queues"])  # type: ignore[attr-defined]


def test_rabbitmq_gets_quorum_queues_with_a_delivery_limit_and_publisher_confirms() -> None:
    config = config_for("amqp://guest:guest@127.0.0.1:5672//")
    assert "broker_transport" not in config
    assert config["broker_transport_options"] == {"confirm_publish": True}
    for queue in config["task_queues"]:  # type: ignore[attr-defined]
        assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 10}


def test_rabbitmq_classic_queues_carry_no_quorum_arguments() -> None:
    settings = Settings(env="development", broker_url="amqp://h//", broker_queue_type="classic")
    assert all(q.queue_arguments is None for q in celery_config(settings)["task_queues"])


@pytest.mark.parametrize("url", ["redis://h/0", "amqp://h//", "memory://localhost/"])
def test_every_queue_is_bound_with_its_own_name_and_tasks_are_never_cancelled_on_a_lost_broker(
    url: str,
) -> None:
    config = config_for(url)
    assert [(q.name, q.routing_key, q.exchange.name) for q in config["task_queues"]] == [  # type: ignore[attr-defined]
        (name, name, "herald") for name in QUEUES
    ]
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert config["worker_consumer"] == "herald.broker.consumer:GuardedConsumer"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://h/0", "redis"),
        ("rediss://h/0", "redis"),
        ("amqp://h//", "amqp"),
        ("pyamqp://h//", "amqp"),
        ("memory://localhost/", "memory"),
    ],
)
def test_broker_kind(url: str, kind: str) -> None:
    assert broker_kind(url) == kind


def test_only_the_in_process_broker_is_warned_about() -> None:
    warning = memory_broker_warning(Settings(env="development", broker_url="memory://localhost/"))
    assert warning is not None
    assert "never receive" in warning
    for url in ("redis://h/0", "amqp://h//"):
        assert memory_broker_warning(Settings(env="development", broker_url=url)) is None


@pytest.mark.parametrize(("countdown", "on_quorum"), [(0.3, 1.0), (1.2, 2.0), (5.0, 5.0), (0, 0)])
def test_countdowns_on_quorum_queues_are_whole_seconds_and_elsewhere_unchanged(
    countdown: float, on_quorum: float
) -> None:
    quorum = config_for("amqp://h//")["task_queues"]
    assert deliverable_countdown(countdown, quorum) == on_quorum  # type: ignore[arg-type]
    redis_queues = config_for("redis://h/0")["task_queues"]
    assert deliverable_countdown(countdown, redis_queues) == countdown  # type: ignore[arg-type]
