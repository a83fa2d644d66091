"""What the broker knows: whether it answers, how fast, and how many messages wait per queue.

Through kombu, on a connection made like Celery's own (same URL, same key prefix). On Redis
a queue is a list per priority step, counted with ``LLEN`` under the deployment's key prefix
(kombu's own passive declare on Redis checks existence without the prefix, so it would always
answer 0 under one); on RabbitMQ and the other transports, the message count of a passive
``queue_declare``. A queue the broker does not know yet holds no messages (Redis drops an
empty list; RabbitMQ answers 404 to a passive declare of a queue nobody declared): 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError

Connect = Callable[[], Connection]


@dataclass(frozen=True, slots=True)
class BrokerProbe:
    reachable: bool
    latency_s: float | None = None
    queue_lengths: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def _redis_length(channel: Any, queue: str) -> int:
    """``LLEN`` of the queue's list at every priority step (Celery's names for them)."""
    names = [f"{queue}{channel.sep}{step}" if step else queue for step in channel.priority_steps]
    with channel.client.pipeline() as pipe:  # the prefixing client: keys get the prefix
        for name in names:
            pipe.llen(name)
        return sum(int(n) for n in pipe.execute())


def _length(connection: Connection, channel: Any, queue: str) -> tuple[int, Any]:
    """The queue's message count, and the channel to use next (a refused declare closes an
    AMQP channel)."""
    if connection.transport.driver_type == "redis":
        return _redis_length(channel, queue), channel
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count), channel
    except connection.channel_errors as exc:
        if "404" in str(getattr(exc, "code", "")) or "NOT_FOUND" in str(exc):
            return 0, connection.channel()
        raise


def probe(connect: Connect, queues: Sequence[str], *, timeout_s: int = 3) -> BrokerProbe:
    """Connect, count every queue, and time it. Never raises for an unreachable broker."""
    connection = connect()
    connection.transport  # noqa: B018 - load the transport's module before the clock starts
    started = time.perf_counter()
    failures: tuple[type[BaseException], ...] = (
        *connection.connection_errors,
        *connection.channel_errors,
        OperationalError,
        OSError,
    )
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        channel = connection.channel()
        lengths: dict[str, int] = {}
        for queue in queues:
            lengths[queue], channel = _length(connection, channel, queue)
        return BrokerProbe(True, time.perf_counter() - started, lengths)
    except failures as exc:
        return BrokerProbe(False, None, {}, f"{type(exc).__name__}: {exc}")
    finally:
        connection.release()
