"""Did the broker lose its messages since the sweep last looked?

A Redis without persistence that restarts (or is flushed, or evicts under ``maxmemory``) loses
every message it held: each ``queued`` post's ``publish`` is gone. Without a sign of it, the
sweep takes such a message for lost only after ``HERALD_QUEUED_TIMEOUT_S`` (5 min).

The sign is a marker key the broker keeps (``herald:broker-epoch``, under the run's key
prefix), set by the sweep when it is missing. Finding it missing means that what the broker held
before is gone, or that this is its first use: every post waiting as ``queued`` is then sent
again at once (:func:`herald.publishing.sweep.requeue_lost`). A post whose message did survive
(a Redis with persistence that dropped only the marker, a message already in a worker's hands)
gets a duplicate message, which is harmless: only one run can claim the post.

RabbitMQ keeps the persistent messages of its durable queues across restarts: nothing to check.
"""

from __future__ import annotations

from typing import Any, cast

from kombu import Connection

from herald.models import utcnow

MARKER = "herald:broker-epoch"


def messages_lost(connection: Connection) -> bool:
    """Whether the broker's marker was missing (and is set now), through ``connection`` (made
    as the workers' are, with the run's key prefix): Redis only, one ``SET NX``."""
    with connection:
        if connection.transport.driver_type != "redis":
            return False
        client = cast(Any, connection.default_channel).client  # kombu's Redis channel
        return bool(client.set(MARKER, utcnow().isoformat(), nx=True))
