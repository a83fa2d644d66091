"""A publish running when the worker loses its broker finishes and is recorded, once.

Herald sets ``worker_cancel_long_running_tasks_on_connection_loss`` to False on purpose
(docs/decisions.md): cancelling would kill the publish between the network's answer and the
database write. On Redis the broker is a Redis of this test's own, restarted mid-call; on
RabbitMQ every connection of the run's virtual host is closed at the broker mid-call, as a
restart closes them, and the broker hands the unacknowledged message out again at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from herald.models import Post, PostStatus
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.brokers import Broker, VirtualHost
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
    _publish_through_a_broker_restart(
        private_redis.restart,
        private_redis_broker,
        connect,
        new_post,
        sandbox,
        pub_settings,
        start_worker_process,
    )


@pytest.mark.slow
def test_a_publish_in_flight_when_rabbitmq_drops_the_connection_is_recorded_once(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    rabbitmq_vhost: VirtualHost,
    rabbitmq_broker: Broker,
) -> None:
    log = _publish_through_a_broker_restart(
        rabbitmq_vhost.drop_connections,
        rabbitmq_broker,
        connect,
        new_post,
        sandbox,
        pub_settings,
        start_worker_process,
    )
    # The message the broker handed out again was run, found its post taken, and published
    # nothing (the counts at the sandbox above). The first run's ack on the closed connection
    # is one warning that says so, not a CRITICAL line with a traceback.
    assert "Traceback" not in log
    assert not re.search(r'"level": "critical"|\[critical', log)
    assert "the connection that delivered it is gone" in log
    assert rabbitmq_broker.queue_sizes()["publish"] == 0


def _publish_through_a_broker_restart(
    restart: Callable[[], None],
    broker: Broker,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
) -> str:
    """One post published while the broker goes away mid-call, then one after; the worker's
    log."""
    settings = pub_settings.model_copy(update={"provider_timeout_s": 15.0})
    integration = connect("mastodon")
    post = new_post(integration, content="in flight while the broker restarts")
    sandbox.inject("mastodon", "latency", ms=4000, method="POST", times=1)
    worker = start_worker_process(settings, name="through-a-restart", broker=broker)
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    broker.send(publish_signature(claimed))
    eventually(lambda: status_of(post) is PostStatus.PUBLISHING, 30, "the publish to start")

    restart()  # the worker's connection drops while the network takes its time

    eventually(lambda: status_of(post) is PostStatus.PUBLISHED, 30, "the publish to finish")
    assert len(sandbox.posts("mastodon")) == 1

    # The worker reconnected and goes on consuming.
    after = new_post(integration, content="sent after the restart")
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    broker.send(publish_signature(claimed))
    eventually(lambda: status_of(after) is PostStatus.PUBLISHED, 30, "the next publish")
    assert len(sandbox.posts("mastodon")) == 2
    assert worker.alive()
    log = worker.log.read_text()
    assert "Unrecoverable error" not in log
    assert "In Celery 5.1 we introduced" not in log
    return log
