"""Did the broker lose its messages since the sweep last looked?

A Redis without persistence that restarts, or any Redis that is flushed (or evicts under
``maxmemory``), loses every message it held: each ``queued`` post's ``publish`` is gone.
Without a sign of it, the sweep takes such a message for lost only after
``HERALD_QUEUED_TIMEOUT_S`` (5 min).

The sign is a marker key the broker keeps (``herald:broker-epoch``, under the run's key
prefix), set by the sweep or a worker's watch when it is missing. Finding it missing means that
what the broker held before is gone, or that this is its first use: every post waiting as
``queued`` is then sent again at once (:func:`herald.publishing.sweep.requeue_lost`). A post
whose message did survive (a Redis with persistence that dropped only the marker, a message
already in a worker's hands) gets a duplicate message, which is harmless: only one run can
claim the post.

On Redis a queue's binding to Herald's exchange is a key like any other. A flush takes the
bindings too, and kombu then drops every message sent to the exchange without a word, until a
worker starting up declares its queues again. So each look declares Herald's queues
(idempotent, as every worker does at its start), after it sets the marker: a flush between the
two then leaves the marker missing for the next look.

RabbitMQ keeps the persistent messages of its durable queues across restarts: nothing to check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from kombu import Connection, Queue

from herald.models import utcnow

MARKER = "herald:broker-epoch"


def messages_lost(connection: Connection, queues: Iterable[Queue]) -> bool:
    """Whether the broker's marker was missing (and is set now), through ``connection`` (made
    as the workers' are, with the run's key prefix), declaring ``queues`` again: Redis only;
    one ``SET NX`` and a few ``SADD``.

    The marker is set before the queues are declared. The other way round, a flush landing
    between the two took the bindings just declared and left the marker set: every message sent
    until the next look was dropped, and no look would send its post again."""
    with connection:
        if connection.transport.driver_type != "redis":
            return False
        channel = connection.default_channel
        client = cast(Any, channel).client  # kombu's Redis channel: the key prefix applies
        emptied = bool(client.set(MARKER, utcnow().isoformat(), nx=True))
        for queue in queues:
            queue(channel).declare()
        return emptied
