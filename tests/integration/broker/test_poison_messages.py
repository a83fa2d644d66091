"""Nothing a producer sends can stop a worker: poison on every queue, on both brokers.

Each poison is put on the broker raw (LPUSH on Redis, a py-amqp publish on RabbitMQ), onto
every Herald queue in turn, in front of a good message. The worker process must survive all of
it, run the good message, record each poison once as a dead letter with its reason, and leave
nothing behind: not in a queue, not unacked (after the worker stops, nothing comes back).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.celery_app import QUEUES, app
from herald.models import DeadLetter, Post, utcnow
from herald.settings import Settings
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn
from tests.integration.broker.poison import (
    CANARY,
    WORKSPACE,
    Poison,
    envelope,
    envelope_poisons,
    publish_to_rabbitmq,
    push_to_redis,
    spread,
    task_level_poisons,
)

ALL_QUEUES = ",".join(QUEUES)


def dead_letters() -> list[DeadLetter]:
    with service_session() as s:
        return list(s.scalars(select(DeadLetter)))


def letter_for(poison: Poison, letters: list[DeadLetter]) -> DeadLetter:
    found = [
        letter
        for letter in letters
        if (poison.task_id and letter.task_id == poison.task_id)
        or (letter.raw and poison.label in letter.raw)
    ]
    assert len(found) == 1, (poison.label, [(d.task_id, d.reason) for d in found])
    return found[0]


def send_poison(broker: Broker, poisons: list[Poison], items: list[Poison]) -> None:
    """``poisons`` as task messages, ``items`` as raw Redis list items (Redis only)."""
    if broker.kind == "redis":
        pushed = [
            (queue, envelope(p.body, p.content_type, p.headers, queue))
            for queue, p in spread(poisons)
        ] + [(queue, p.body) for queue, p in spread(items)]
        push_to_redis(broker.url, broker.prefix, pushed)
    else:
        publish_to_rabbitmq(broker.url, spread(poisons))


def schedule_signature(integration: Any) -> Any:
    return app.signature(
        "herald.posts.schedule",
        kwargs={
            "workspace_id": str(integration.workspace_id),
            "integration_id": str(integration.id),
            "content": "the good message after the poison",
            "scheduled_at": utcnow().isoformat(),
            "idempotency_key": "after-poison",
        },
    )


@pytest.mark.slow
def test_poison_on_every_queue_is_recorded_acked_and_the_worker_keeps_consuming(
    broker: Broker,
    connect: ConnectFn,
    pub_settings: Settings,
    start_worker_process: StartWorker,
) -> None:
    integration = connect("mastodon")
    worker = start_worker_process(pub_settings, name="taster", queues=ALL_QUEUES, broker=broker)
    poisons = task_level_poisons()
    items = envelope_poisons() if broker.kind == "redis" else []
    send_poison(broker, poisons, items)
    broker.send(schedule_signature(integration))

    expected = len(poisons) + len(items)
    try:
        eventually(
            lambda: len(dead_letters()),
            60,
            f"{expected} letters",
            until=lambda count: count >= expected or not worker.alive(),
        )
    except AssertionError as late:  # name what is missing: a flake or a lost message?
        letters = dead_letters()
        missing = [
            p.label
            for p in [*poisons, *items]
            if not any(
                (p.task_id and d.task_id == p.task_id) or (d.raw and p.label in d.raw)
                for d in letters
            )
        ]
        raise AssertionError(
            f"{late}; missing {missing}; messages still in the queues (delivered but unacked "
            f"ones are not counted): {broker.queue_sizes()}; worker log: "
            f"{worker.log.read_text()[-3000:]}"
        ) from None
    assert worker.alive(), worker.log.read_text()[-3000:]

    def good_message_ran() -> bool:
        with service_session() as s:
            return s.scalars(select(Post)).first() is not None

    eventually(good_message_ran, 30, "the good message to run")

    letters = dead_letters()
    assert len(letters) == expected
    for poison in [*poisons, *items]:
        letter = letter_for(poison, letters)
        assert poison.reason in letter.reason, (poison.label, letter.reason)
    unknown = letter_for(poisons[[p.label for p in poisons].index("unknown-task")], letters)
    assert (unknown.task_name, str(unknown.workspace_id)) == ("herald.no_such_task", WORKSPACE)
    assert unknown.correlation_id == "poison-unknown-task"  # no correlation header: the task id
    nul = letter_for(poisons[-1], letters)
    assert str(nul.workspace_id) == WORKSPACE  # from the payload
    assert "\\x00" in str(nul.payload)
    for letter in letters:  # a secret in a base64 body is redacted like any other
        assert CANARY not in f"{letter.raw} {letter.payload} {letter.reason}", letter.task_id
    if broker.kind == "redis":
        secret = next(d for d in letters if d.task_id == "poison-secret-base64")
        assert "decoded in this record" in (secret.raw or "")
    garbage = next(d for d in letters if d.raw and "not-json" in d.raw)
    assert "\\x00" in garbage.raw  # NUL and undecodable bytes are kept, escaped
    assert "\\xff" in garbage.raw

    # Acked, not merely out of sight: once the worker has stopped, nothing comes back.
    worker.stop()
    assert broker.queue_sizes() == dict.fromkeys(broker.queue_sizes(), 0)
    if broker.kind == "redis":
        client = redis.Redis.from_url(broker.url)
        assert client.hlen(broker.prefix + "unacked") == 0
        client.close()


@pytest.mark.slow
def test_poison_published_on_the_control_channel_is_recorded_and_the_worker_keeps_running(
    redis_broker: Broker,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    committed: Engine,
) -> None:
    """On Redis, Celery's control messages (ping, revoke…) arrive by pub/sub, parsed like a
    queue item: garbage PUBLISHed there must not stop the worker either."""
    worker = start_worker_process(pub_settings, name="controlled", broker=redis_broker)
    channel = f"{redis_broker.prefix}/0.celery.pidbox"
    client = redis.Redis.from_url(redis_broker.url)
    try:
        assert client.publish(channel, b'["control-array", 1]') == 1  # the worker listens
        assert client.publish(channel, b"\x00control-garbage") == 1
    finally:
        client.close()
    eventually(
        lambda: not worker.alive() or len(dead_letters()) == 2, 20, "the control poison refused"
    )
    assert worker.alive(), worker.log.read_text()[-3000:]
    letters = {letter.raw: letter for letter in dead_letters()}
    array = letters['["control-array", 1]']
    assert "not a kombu envelope" in array.reason
    assert array.queue == "/0.celery.pidbox"
    assert "not JSON" in letters["\\x00control-garbage"].reason
    # And it still answers control messages.
    assert redis_broker.app.control.ping([worker.nodename], limit=1)
