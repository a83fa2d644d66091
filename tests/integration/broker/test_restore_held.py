"""A dead run's message, held unacked in Redis, is put back on its queue at once
(``herald.broker.redis.restore_held``), served next; a later delivery of the same message,
which a living worker holds, is left alone."""

from __future__ import annotations

import time
import uuid

from herald.broker.redis import restore_held
from tests.fixtures.brokers import Broker


def test_only_a_delivery_made_before_the_dead_run_started_is_put_back_and_served_next(
    redis_broker: Broker,
) -> None:
    app = redis_broker.app
    held_id = str(uuid.uuid4())
    app.send_task("herald.posts.publish", kwargs={"post_id": str(uuid.uuid4())}, task_id=held_id)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert channel.basic_get("publish", no_ack=False) is not None  # held, as by a worker
        delivered = time.time()
        later_id = str(uuid.uuid4())
        app.send_task(
            "herald.posts.publish", kwargs={"post_id": str(uuid.uuid4())}, task_id=later_id
        )

        # A run that started before this delivery: the delivery is a later one, in a living
        # worker's hands.
        assert restore_held(connection, {held_id: delivered - 60}) == 0
        assert redis_broker.queue_sizes()["publish"] == 1
        assert restore_held(connection, {str(uuid.uuid4()): delivered + 60}) == 0  # not held

        # The dead run started after the delivery: the message goes back, to be served next.
        assert restore_held(connection, {held_id: delivered + 60}) == 1
        assert redis_broker.queue_sizes()["publish"] == 2
        served = channel.basic_get("publish", no_ack=True)
        assert served is not None
        assert served.headers["id"] == held_id
        assert restore_held(connection, {held_id: delivered + 60}) == 0  # no longer held
