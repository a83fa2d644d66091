"""Queues, the exchange, routing keys, and the broker-specific Celery settings.

Every queue is bound to one topic exchange, ``herald``, with its own name as routing key, so a
message routed to ``publish`` lands on ``publish`` alone. (A bare ``Queue(name)`` would bind
every queue to the ``default`` exchange with routing key ``default``: one message would run on
every queue.) The exchange is a topic exchange because RabbitMQ's native delayed delivery, which
Celery uses for countdowns on quorum queues, routes through topic bindings; a routing key
without wildcards matches exactly as a direct exchange would.

Redis and RabbitMQ differ underneath (docs/brokers.md):

- Redis: kombu's transport guarded by :mod:`herald.broker.redis`; a visibility timeout above the
  longest task (an unacked message is redelivered after it); the run's key prefix.
- RabbitMQ: quorum queues (replicated, and RabbitMQ counts deliveries) with a delivery limit,
  so a message that kills its worker process again and again is dropped by the broker instead
  of crash-looping every worker (``HERALD_BROKER_QUEUE_TYPE=classic`` for producers that
  declare queues without arguments); publisher confirms, so a send returns only once RabbitMQ
  has the message.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from kombu import Exchange, Queue

from herald.settings import Settings, broker_kind, keepalive_probes

EXCHANGE = Exchange("herald", type="topic", durable=True)
DEFAULT_QUEUE = "default"

_GUARDED_TRANSPORTS = {
    "redis": "herald.broker.redis:Transport",
    "rediss": "herald.broker.redis:Transport",
    "sentinel": "herald.broker.redis:SentinelTransport",
}


def declare_queues(names: Iterable[str], settings: Settings) -> list[Queue]:
    """One queue per name, bound to :data:`EXCHANGE` with its own name as routing key."""
    arguments: dict[str, Any] | None = None
    if broker_kind(settings.broker_url) == "amqp" and settings.broker_queue_type == "quorum":
        arguments = {
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.broker_delivery_limit,
        }
    return [
        Queue(name, EXCHANGE, routing_key=name, durable=True, queue_arguments=arguments)
        for name in names
    ]


def deliverable_countdown(countdown: float, queues: Iterable[Queue]) -> float:
    """``countdown`` as the broker can honour it.

    On quorum queues Celery delays a message through RabbitMQ's native delayed delivery, which
    counts whole seconds: a countdown under one second makes Celery 5.7 raise while sending the
    retry, and the task is rejected without requeue (lost). There a countdown is rounded up to
    whole seconds; elsewhere it is unchanged.
    """
    if countdown > 0 and any(
        (queue.queue_arguments or {}).get("x-queue-type") == "quorum" for queue in queues
    ):
        return float(max(1, math.ceil(countdown)))
    return countdown


def broker_options(settings: Settings) -> dict[str, Any]:
    """The Celery settings that depend on which broker ``settings.broker_url`` names."""
    kind = broker_kind(settings.broker_url)
    transport_options: dict[str, Any] = {}
    options: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": EXCHANGE.name,
        "task_default_exchange_type": EXCHANGE.type,
        "task_default_routing_key": DEFAULT_QUEUE,
        # Refuses what it cannot run instead of dying on it (herald.broker.consumer).
        "worker_consumer": "herald.broker.consumer:GuardedConsumer",
        # On a lost broker connection a running task keeps running and records its outcome.
        # RabbitMQ requeues its unacked message and another worker may receive it, but every
        # Herald task is safe to run twice (a publish claims its post with a conditional
        # UPDATE, so the second run is a no-op). Cancelling instead would kill a publish
        # between the network's answer and the database write: exactly the ambiguous state
        # that ends in reconciliation or needs_review. See docs/decisions.md.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
    if kind == "redis":
        scheme = urlparse(settings.broker_url).scheme
        options["broker_transport"] = _GUARDED_TRANSPORTS[scheme]
        transport_options["visibility_timeout"] = settings.visibility_timeout_s
        if settings.broker_key_prefix:
            transport_options["global_keyprefix"] = settings.broker_key_prefix
        transport_options |= _redis_dead_peer_options(settings.dead_peer_timeout_s)
    elif kind == "amqp":
        transport_options["confirm_publish"] = True
    options["broker_transport_options"] = transport_options
    return options


def _redis_dead_peer_options(timeout_s: int) -> dict[str, Any]:
    """redis-py's socket options that make a silent Redis fail a command within about
    ``timeout_s``. Without a socket timeout a send (a task sent by a task, by beat, by the
    dispatcher) to a Redis that accepts and never answers waited for ever, and beat with it;
    kombu's own health checks cover only the consumer's BRPOP. Keepalive probes
    (:func:`herald.settings.keepalive_probes`) end an idle connection to a vanished host.
    RabbitMQ needs none of this: py-amqp's connect and handshake have a timeout, and its
    sockets have keepalives and ``TCP_USER_TIMEOUT`` by default."""
    if timeout_s <= 0:
        return {}
    idle, interval, count = keepalive_probes(timeout_s)
    return {
        "socket_timeout": timeout_s,
        "socket_keepalive": True,
        "socket_keepalive_options": {
            socket.TCP_KEEPIDLE: idle,
            socket.TCP_KEEPINTVL: interval,
            socket.TCP_KEEPCNT: count,
        },
    }


def memory_broker_warning(settings: Settings) -> str | None:
    """What to tell someone starting a worker on the in-process ``memory://`` broker."""
    if broker_kind(settings.broker_url) != "memory":
        return None
    return (
        f"HERALD_BROKER_URL is {settings.broker_url!r}, an in-process broker: this worker will "
        "never receive a task sent by another process (the API, beat, another service). "
        "Set HERALD_BROKER_URL to a Redis or RabbitMQ URL (docs/brokers.md); only `herald "
        "demo` runs worker and beat in one process."
    )
