"""Each queue is bound with its own routing key: a message lands on one queue, on both brokers.

A bare ``Queue(name)`` binds every queue to the ``default`` exchange with routing key
``default``; then one message sent there was copied onto all four queues and ran four times.
No worker runs here: the test counts what waits in each queue.
"""

from __future__ import annotations

import pytest

from herald.celery_app import QUEUES, app
from tests.fixtures.brokers import Broker
from tests.fixtures.polling import eventually

# One task per queue, routed by Herald's ROUTES.
ROUTED = {
    "default": "herald.posts.schedule",
    "publish": "herald.posts.publish",
    "sweep": "herald.posts.sweep_stuck",
    "tokens": "herald.tokens.refresh",
    "alerts": "herald.alerts.evaluate",
}


def test_every_task_route_reaches_its_own_queue_and_no_other(broker: Broker) -> None:
    assert set(ROUTED) == set(QUEUES)
    broker.declare_queues()  # every queue bound, as on a worker consuming all of them
    for queue in QUEUES:
        broker.send(app.signature(ROUTED[queue], kwargs={"routed_to": queue}))
    eventually(lambda: broker.queue_sizes() == dict.fromkeys(QUEUES, 1), 10, "one per queue")


@pytest.mark.parametrize("queue", QUEUES)
def test_a_message_to_the_exchange_lands_only_on_the_queue_its_routing_key_names(
    broker: Broker, queue: str
) -> None:
    broker.declare_queues()
    binding = broker.app.amqp.queues[queue]
    assert binding.routing_key == queue
    with broker.app.connection_for_write() as conn:
        # What another service's producer does: publish to the exchange with the queue's key.
        conn.Producer().publish(
            b"[[], {}, {}]",
            exchange=binding.exchange.name,
            routing_key=binding.routing_key,
            content_type="application/json",
            content_encoding="utf-8",
        )
    expected = {name: int(name == queue) for name in QUEUES}
    eventually(lambda: broker.queue_sizes() == expected, 10, f"one message on {queue} only")
