"""A Node.js service sends Herald a post with celery-node, the Celery client for Node.js, as
another team would: the real package (pinned in tests/integration/broker/node/package.json),
run by the machine's Node.js. On Redis (no key prefix: celery-node has none) with each of
Celery's two message protocols, and on RabbitMQ with classic queues, as docs/brokers.md says
(celery-node declares a plain durable queue, which RabbitMQ refuses beside Herald's quorum
queues: the send fails loudly at the producer). The post is scheduled once and correlated by
the message's task id (celery-node sends no correlation header).

Outside CI a machine without Node.js and npm skips these tests, saying so; with ``CI=true``
they fail instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from herald.celery_app import create_app
from herald.models import DeadLetter, Post, utcnow
from herald.settings import Settings, get_settings
from tests.conftest import RUN_ID
from tests.fixtures.brokers import AMQP_URL, IN_CI, Broker, VirtualHost
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn
from tests.fixtures.servers import RedisServer

NODE_PROJECT = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def celery_node() -> list[str]:
    """The command that sends one task with celery-node; installs the package once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "Node.js and npm are needed to run celery-node"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: these tests must run)", pytrace=False)
        pytest.skip(f"{reason}: install nodejs and npm")
    if not (NODE_PROJECT / "node_modules" / "celery-node").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_PROJECT,
            check=True,
            timeout=300,
        )
    return [node, str(NODE_PROJECT / "send.js")]


@pytest.fixture
def unprefixed_redis_broker(private_redis: RedisServer) -> Broker:
    """A Redis broker with no key prefix, as celery-node writes to it."""
    settings = get_settings().model_copy(
        update={"broker_url": private_redis.url, "broker_key_prefix": ""}
    )
    env = {"HERALD_BROKER_URL": private_redis.url, "HERALD_BROKER_KEY_PREFIX": ""}
    return Broker("redis", private_redis.url, create_app(settings, set_as_current=False), env=env)


@pytest.fixture
def classic_rabbitmq_broker() -> Iterator[Broker]:
    """A virtual host of this test's own, its queues classic (``HERALD_BROKER_QUEUE_TYPE``)."""
    vhost = VirtualHost(AMQP_URL, f"herald-test-{RUN_ID}-classic")
    vhost.create()
    settings = get_settings().model_copy(
        update={"broker_url": vhost.url, "broker_queue_type": "classic"}
    )
    app = create_app(settings, set_as_current=False)
    env = {"HERALD_BROKER_URL": vhost.url, "HERALD_BROKER_QUEUE_TYPE": "classic"}
    yield Broker("rabbitmq", vhost.url, app, env=env)
    app.close()
    vhost.delete()


def send_with_celery_node(
    command: list[str], broker: Broker, kwargs: dict[str, str], protocol: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, broker.url, "default", "herald.posts.schedule", json.dumps(kwargs), protocol],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("broker_name", "protocol"),
    [("unprefixed_redis", "1"), ("unprefixed_redis", "2"), ("classic_rabbitmq", "2")],
)
def test_a_post_sent_by_a_node_service_with_celery_node_is_scheduled_once(
    request: pytest.FixtureRequest,
    celery_node: list[str],
    connect: ConnectFn,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker_name: str,
    protocol: str,
) -> None:
    broker: Broker = request.getfixturevalue(f"{broker_name}_broker")
    integration = connect("mastodon")
    start_worker_process(pub_settings, name="node-consumer", broker=broker)
    content = f"sent from Node.js with celery-node to {broker_name}, protocol {protocol}"
    kwargs = {
        "workspace_id": str(integration.workspace_id),
        "integration_id": str(integration.id),
        "content": content,
        "scheduled_at": utcnow().isoformat(),
        "idempotency_key": f"node-{broker_name}-{protocol}",
    }

    sent = send_with_celery_node(celery_node, broker, kwargs, protocol)
    assert sent.returncode == 0, sent.stderr[-2000:]
    task_id = sent.stdout.strip()

    def scheduled() -> list[Post]:
        with service_session() as s:
            return list(s.scalars(select(Post).where(Post.content == content)))

    posts = eventually(scheduled, 30, "the post celery-node sent to be scheduled")
    assert len(posts) == 1
    assert posts[0].correlation_id == task_id
    with service_session() as s:
        assert list(s.scalars(select(DeadLetter))) == []


def test_on_quorum_queues_celery_node_s_send_fails_loudly_at_the_producer(
    celery_node: list[str], rabbitmq_broker: Broker
) -> None:
    """What docs/brokers.md tells a Node.js team: Herald's default quorum queues refuse
    celery-node's declaration, so the send fails where its sender sees it; nothing is queued."""
    rabbitmq_broker.declare_queues()
    sent = send_with_celery_node(celery_node, rabbitmq_broker, {"content": "refused"}, "2")

    assert sent.returncode != 0
    assert "PRECONDITION_FAILED" in sent.stderr
    assert "x-queue-type" in sent.stderr
    assert rabbitmq_broker.queue_sizes()["default"] == 0
