"""The worker's consumer: nothing a producer sends can stop it.

Celery's consumer hands every task message to the task's strategy, which trusts the message's
shape; a malformed one raises outside every handler and the worker exits. Celery's own
refusals (an unknown task, an undecodable body, a disallowed content type) are only logged,
and some are rejected without requeue: the message is gone.

:class:`GuardedConsumer` (``worker_consumer`` in the Celery config) puts
:func:`~herald.broker.inspection.inspect_message` in front of the strategy and routes every
refusal, its own and Celery's, to one place: a dead letter is recorded
(:func:`~herald.broker.dead_letters.record_dead_letter`) and the message is acked, so it is
neither lost nor redelivered forever. A message's size is bounded before anything reads it
(:mod:`herald.broker.limits`, which this consumer installs in kombu's decompression). A
message that passes inspection runs exactly as before; should the strategy still raise for it,
that message is refused the same way, and the worker goes on. Connection and channel errors
are not the message's fault and propagate as before, so the consumer reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer
from kombu.message import Message
from vine import promise

from herald.broker.dead_letters import record_dead_letter
from herald.broker.inspection import (
    Refusal,
    decode_error_reason,
    identify,
    inspect_message,
    refused_payload,
)
from herald.broker.limits import bound_decompression
from herald.telemetry import metrics
from herald.telemetry.errors import describe_error

logger = get_logger(__name__)


class GuardedConsumer(Consumer):
    """Celery's consumer, refusing (recording and acking) every message it cannot run."""

    # Set by Celery's __init__ from the transport (missing from celery-types' stubs).
    connection_errors: tuple[type[BaseException], ...]
    channel_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before the first message is made: kombu decompresses while making it.
        bound_decompression()
        super().__init__(*args, **kwargs)

    def create_task_handler(self, promise: type[promise] = promise) -> Callable[..., Any]:
        handle = super().create_task_handler(promise)
        registered = self.app.tasks
        broker_errors = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Message) -> None:
            try:
                refusal = inspect_message(message, registered)
                if refusal is None:
                    handle(message)
                    return
            except broker_errors:
                raise
            except Exception as exc:  # no message may stop the worker
                error_type, error = describe_error(exc)
                reason = f"the worker could not accept the message: {error_type}: {error}"
                refusal = Refusal(reason, identify(message), refused_payload(message))
            self.refuse(message, refusal)

        return on_task_received

    # Celery's own refusals, recorded and acked the same way.

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        reason = decode_error_reason(message, exc)
        self.refuse(message, Refusal(reason, identify(message), refused_payload(message)))

    def on_unknown_message(self, body: Any, message: Message) -> None:
        reason = "not a task message: no task name in its headers or body"
        self.refuse(message, Refusal(reason, identify(message, body), refused_payload(message)))

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        reason = f"unknown task: {exc}"
        self.refuse(message, Refusal(reason, identify(message, body), refused_payload(message)))

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        error_type, error = describe_error(exc)
        reason = f"invalid task message: {error_type}: {error}"
        self.refuse(message, Refusal(reason, identify(message, body), refused_payload(message)))

    def refuse(self, message: Message, refusal: Refusal) -> None:
        """Record ``message`` as a dead letter and ack it: kept, and never delivered again."""
        delivery = message.delivery_info or {}
        task = refusal.identity.task_name
        # Counted as celery-exporter counts a rejected task; a name nobody registered is not a
        # label value (any producer could invent unbounded ones).
        metrics.task_events["rejected"].add(
            1,
            {
                "task": task if task in self.app.tasks else "unregistered",
                "queue": metrics.queue_of(delivery),
            },
        )
        record_dead_letter(
            refusal.reason,
            refusal.identity,
            payload=refusal.payload,
            raw=message.body,
            # Herald binds each queue with its own name as routing key.
            queue=delivery.get("routing_key") if isinstance(delivery, dict) else None,
            source="consumer",
        )
        if not message.acknowledged:
            message.ack_log_error(logger, self.connection_errors)
