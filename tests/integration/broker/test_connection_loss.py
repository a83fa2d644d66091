"""A publish running when the worker loses its broker finishes and is recorded, once.

Herald sets ``worker_cancel_long_running_tasks_on_connection_loss`` to False on purpose
(docs/decisions.md): cancelling would kill the publish between the network's answer and the
database write. The broker here is a Redis of this test's own, restarted mid-call.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from herald.models import Post, PostStatus
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn
from tests.fixtures.servers import RedisServer


def status_of(post: Post) -> PostStatus:
    with service_session() as s:
        current = s.get(Post, post.id)
        assert current is not None
        return current.status


@pytest.mark.slow
def test_a_publish_in_flight_when_the_broker_connection_drops_is_recorded_once(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    private_redis: RedisServer,
    private_redis_broker: Broker,
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 15.0})
    integration = connect("mastodon")
    post = new_post(integration, content="in flight while the broker restarts")
    sandbox.inject("mastodon", "latency", ms=4000, method="POST", times=1)
    worker = start_worker_process(settings, name="through-a-restart", broker=private_redis_broker)
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    private_redis_broker.send(publish_signature(claimed))
    eventually(lambda: status_of(post) is PostStatus.PUBLISHING, 30, "the publish to start")

    private_redis.restart()  # the worker's connection drops while the network takes its time

    eventually(lambda: status_of(post) is PostStatus.PUBLISHED, 30, "the publish to finish")
    assert len(sandbox.posts("mastodon")) == 1

    # The worker reconnected and goes on consuming.
    after = new_post(integration, content="sent after the restart")
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    private_redis_broker.send(publish_signature(claimed))
    eventually(lambda: status_of(after) is PostStatus.PUBLISHED, 30, "the next publish")
    assert len(sandbox.posts("mastodon")) == 2
    assert worker.alive()
    log = worker.log.read_text()
    assert "Unrecoverable error" not in log
    assert "In Celery 5.1 we introduced" not in log
