"""The whole pipeline on real worker processes, real Postgres, the sandbox, and each broker.

Every test counts deliveries at the sandbox: "published exactly once" means one post there.
Tests taking ``broker`` run on Redis and on RabbitMQ (tests/fixtures/brokers.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError
from sqlalchemy import func, select

from herald.broker import restarts
from herald.celery_app import broker_connection
from herald.models import EventCount, Post, PostStatus, PublishAttempt, utcnow
from herald.publishing.dispatch import claim_due_posts, confirm_sent, dispatch_due_posts
from herald.publishing.sweep import BROKER_LOST_MESSAGES, requeue_lost, resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tasks.publishing import publish_signature, send_claimed
from herald.telemetry import metrics
from tests.fixtures.brokers import AMQP_URL, Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, due_posts
from tests.fixtures.servers import RedisServer


def statuses() -> Counter[str]:
    with service_session() as s:
        rows = s.execute(select(Post.status, func.count()).group_by(Post.status)).all()
    return Counter({status.value: count for status, count in rows})


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate``; a timeout names ``what`` and shows the statuses it ended on."""
    eventually(statuses, timeout, what, until=lambda _: predicate(), every=0.2)


def resent(reason: str) -> float:
    """``herald_posts_resent_total{reason}`` in this process."""
    sample = metrics.REGISTRY.get_sample_value("herald_posts_resent_total", {"reason": reason})
    return sample or 0.0


def dispatch_once(settings: Settings, broker: Broker) -> int:
    """One dispatcher tick: claim, commit, enqueue, confirm (the task body, without Celery)."""
    with service_session() as s:
        claimed = claim_due_posts(s, settings)
    for post in claimed:
        broker.send(publish_signature(post))
    with service_session() as s:
        confirm_sent(s, [post.post_id for post in claimed])
    return len(claimed)


@pytest.mark.slow
def test_thousand_due_posts_with_two_dispatchers_and_two_workers_publish_exactly_once(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    networks = ["mastodon", "x", "bluesky", "telegram"]
    for network in networks:
        sandbox.set_rate_limit(network, limit=100_000, window_s=60)
    integrations = [connect(network) for network in networks]
    due_posts(integrations, 1000)
    start_worker_process(pub_settings, name="w1", broker=broker)
    start_worker_process(pub_settings, name="w2", broker=broker)

    claimed: list[int] = []

    def dispatcher() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and statuses()["scheduled"]:
            claimed.append(dispatch_once(pub_settings, broker))
            time.sleep(0.05)  # noqa: TID251 -- the dispatcher's tick (a cadence), not a wait

    racers = [threading.Thread(target=dispatcher) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sum(claimed) == 1000  # each post claimed by exactly one dispatcher
    wait_until(lambda: statuses()["published"] == 1000, 180, "1,000 posts published")
    remote = sandbox.posts()
    assert len(remote) == 1000
    texts = Counter(p["text"] for p in remote)
    assert len(texts) == 1000
    assert max(texts.values()) == 1
    with service_session() as s:
        assert s.scalar(select(func.max(Post.attempts))) == 1


def _kill_mid_call(
    network: str,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> Post:
    """Publish one post and SIGKILL its worker after the network applied it, before the
    outcome was recorded."""
    post = new_post(connect(network), content=f"in flight on {network} when the worker died")
    # The network applies the post, then takes 20 s to answer: the worker is caught mid-call.
    sandbox.inject(network, "timeout", applied=True, ms=20_000, method="POST", times=1)
    worker = start_worker_process(settings, name=f"doomed-{network}", broker=broker)
    dispatch_once(settings, broker)
    wait_until(lambda: len(sandbox.posts(network)) == 1, 30, "the network to receive the post")
    worker.kill()
    with service_session() as s:
        stuck = s.get(Post, post.id)
        assert stuck is not None
        assert stuck.status is PostStatus.PUBLISHING
    return post


@pytest.mark.slow
@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("mastodon", PostStatus.PUBLISHED),
        ("x", PostStatus.PUBLISHED),
        ("telegram", PostStatus.NEEDS_REVIEW),
        ("linkedin", PostStatus.NEEDS_REVIEW),
    ],
)
def test_worker_killed_after_the_network_received_the_post_never_publishes_twice(
    network: str,
    expected: PostStatus,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 30.0})
    post = _kill_mid_call(
        network, connect, new_post, sandbox, settings, start_worker_process, broker
    )

    # The worker is dead: a short publishing timeout races with nothing in flight.
    sweep_settings = pub_settings.model_copy(
        update={"publishing_timeout_s": 0.5, "provider_timeout_s": 1.0}
    )

    def sweep() -> int:
        with service_session() as s:
            return sum(resolve_dead_workers(s, sweep_settings, keys).values())

    assert eventually(sweep, 30, "the sweep to take the post past its publishing timeout") == 1
    with service_session() as s:
        swept = s.get(Post, post.id)
        assert swept is not None
        assert swept.status is expected
        if expected is PostStatus.PUBLISHED:
            assert swept.external_id == str(sandbox.posts(network)[0]["id"])
        else:
            assert "worker lost" in (swept.last_error_message or "")
    # A second sweep, or the redelivered message, changes nothing: one post at the network.
    with service_session() as s:
        assert sum(resolve_dead_workers(s, sweep_settings, keys).values()) == 0
    assert len(sandbox.posts(network)) == 1


@pytest.mark.slow
def test_redis_restart_while_posts_are_queued_loses_nothing(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    private_redis: RedisServer,
    private_redis_broker: Broker,
) -> None:
    """On a Redis of this test's own: the shared one is never restarted. A worker's watch sees
    the broker emptied when it first looks and sends every queued post again, without waiting
    for ``HERALD_QUEUED_TIMEOUT_S`` (5 min) or a sweep."""
    broker = private_redis_broker
    on_private = pub_settings.model_copy(update={"broker_url": private_redis.url})

    def messages_lost() -> bool:  # as the sweep and the watch ask
        return restarts.messages_lost(
            broker_connection(on_private), broker.app.amqp.queues.values()
        )

    assert messages_lost()  # this Redis's first use: the marker is set now
    assert not messages_lost()  # ... and kept while the broker keeps what it holds
    due_posts([connect("mastodon"), connect("bluesky")], 40)
    assert dispatch_once(pub_settings, broker) == 40  # 40 publish messages now wait in Redis
    assert broker.queue_sizes()["publish"] == 40
    private_redis.restart()  # this Redis keeps nothing on disk: every queued message is gone
    assert broker.queue_sizes()["publish"] == 0
    assert statuses()["queued"] == 40  # nobody will publish them by message any more

    start_worker_process(pub_settings, name="after-restart", broker=broker)
    wait_until(lambda: statuses()["published"] == 40, 60, "40 posts published")
    assert len(sandbox.posts()) == 40
    assert not messages_lost()  # the worker's watch set the marker again
    with service_session() as s:  # what the default rule "Broker lost messages" reads
        counted = s.scalar(
            select(func.sum(EventCount.count)).where(EventCount.name == BROKER_LOST_MESSAGES)
        )
    assert counted == 40


def test_a_flush_in_the_middle_of_a_look_is_seen_by_the_next_look(
    pub_settings: Settings, private_redis: RedisServer, private_redis_broker: Broker
) -> None:
    """A flush that lands after a look declared the queues, before it set the marker, took the
    bindings the look had just restored: the look must leave the marker missing, so that the
    next one declares them again and sends every queued post again (what it sent in between
    was dropped). Found in CI: three posts dispatched right after such a flush waited for the
    sweep's queued timeout."""
    on_private = pub_settings.model_copy(update={"broker_url": private_redis.url})
    queues = list(private_redis_broker.app.amqp.queues.values())
    client = redis.Redis.from_url(private_redis.url)

    class FlushedWhileDeclaring:
        def __init__(self, queue: Any) -> None:
            self.queue = queue

        def __call__(self, channel: Any) -> Any:
            bound = self.queue(channel)
            declare = bound.declare

            def declare_then_flush(*args: Any, **kwargs: Any) -> Any:
                declared = declare(*args, **kwargs)
                client.flushall()  # the flush lands here, mid-look
                return declared

            bound.declare = declare_then_flush
            return bound

    look = [*queues[:-1], FlushedWhileDeclaring(queues[-1])]
    restarts.messages_lost(broker_connection(on_private), look)
    assert restarts.messages_lost(broker_connection(on_private), queues)  # seen, and declared


@pytest.mark.slow
def test_a_redis_flushed_under_a_running_worker_loses_nothing(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    private_redis: RedisServer,
    private_redis_broker: Broker,
) -> None:
    """``FLUSHALL`` takes the queued messages and the queues' bindings: every message sent to
    the exchange afterwards (the dispatcher's, beat's ``sweep_stuck``) was dropped without a
    word until a worker restarted. The worker's own watch, every ``HERALD_SWEEP_INTERVAL_S``,
    declares the queues again and sends every queued post again."""
    broker = private_redis_broker
    start_worker_process(pub_settings, name="flushed", broker=broker, HERALD_SWEEP_INTERVAL_S="1")
    due_posts([connect("mastodon")], 4)
    assert dispatch_once(pub_settings, broker) == 4
    wait_until(lambda: statuses()["published"] == 4, 30, "4 posts published")

    redis.Redis.from_url(private_redis.url).flushall()
    bluesky = connect("bluesky")
    for i in range(3):
        new_post(bluesky, content=f"after the flush {i}")
    assert dispatch_once(pub_settings, broker) == 3  # sent into a broker with no bindings
    wait_until(lambda: statuses()["published"] == 7, 30, "the 3 posts sent after the flush")
    assert sorted(p["text"] for p in sandbox.posts("bluesky")) == [
        f"after the flush {i}" for i in range(3)
    ]


def test_posts_the_dispatcher_could_not_send_go_to_the_sweeps_next_run(
    connect: ConnectFn,
    pub_settings: Settings,
    private_redis: RedisServer,
    private_redis_broker: Broker,
) -> None:
    """Redis goes away between the claim's commit and the sends: the claimed posts would have
    waited as ``queued`` for ``HERALD_QUEUED_TIMEOUT_S`` (5 min); the sweep's next run sends
    them instead."""
    due_posts([connect("mastodon")], 5)
    with service_session() as s:
        claimed = claim_due_posts(s, pub_settings)
    assert len(claimed) == 5
    private_redis.stop()
    with (
        private_redis_broker.app.connection_for_write() as connection,
        pytest.raises(OperationalError),
        connection.Producer() as producer,
    ):
        send_claimed(claimed, producer)
    assert statuses()["queued"] == 5
    with service_session() as s:
        requeued = requeue_lost(s, pub_settings)  # the default queued timeout
    assert sorted(post.post_id for post in requeued) == sorted(post.post_id for post in claimed)


def test_posts_of_a_dispatcher_killed_before_its_sends_go_to_the_sweep_within_seconds(
    connect: ConnectFn, pub_settings: Settings
) -> None:
    """A dispatcher killed (``kill -9``, the OOM killer) between its claim's commit and its
    sends: its posts would have waited as ``queued`` for ``HERALD_QUEUED_TIMEOUT_S`` (5 min).
    Never confirmed sent, they are the sweep's once ``HERALD_SEND_TIMEOUT_S`` has passed; posts
    whose sends were confirmed wait for the queued timeout as before."""
    due_posts([connect("mastodon")], 6)
    with service_session() as s:
        claimed = claim_due_posts(s, pub_settings.model_copy(update={"dispatch_batch_size": 4}))
    assert len(claimed) == 4  # ... and the dispatcher dies: nothing is sent
    with service_session() as s:  # another dispatcher's batch, sent and confirmed
        confirmed = dispatch_due_posts(s, pub_settings, lambda posts: None)
    assert confirmed == 2

    resent_before = {reason: resent(reason) for reason in metrics.RESENT_REASONS}
    with service_session() as s:  # within the send timeout the dispatcher may still be sending
        assert requeue_lost(s, pub_settings) == []
    overdue = pub_settings.model_copy(update={"send_timeout_s": 1e-6})
    with service_session() as s:
        requeued = requeue_lost(s, overdue)
    assert sorted(post.post_id for post in requeued) == sorted(post.post_id for post in claimed)
    assert {reason: resent(reason) - resent_before[reason] for reason in resent_before} == {
        "never_sent": 4,
        "message_lost": 0,
        "broker_emptied": 0,
    }
    with service_session() as s:  # the sweep's own sends are confirmed like a dispatcher's
        assert requeue_lost(s, pub_settings) == []  # ... not taken again while it sends them
        assert confirm_sent(s, [post.post_id for post in requeued]) == 4
    with service_session() as s:
        assert requeue_lost(s, overdue) == []
        queued_at = s.scalars(select(Post.queued_at).where(Post.status == PostStatus.QUEUED))
        assert None not in list(queued_at)
    assert statuses()["queued"] == 6


@pytest.mark.slow
def test_a_post_sent_by_another_service_is_published_under_its_own_correlation(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    celery_app: Any,
) -> None:
    """Nothing but send_task and the broker, as another service would; then beat's tick."""
    integration = connect("mastodon")
    start_worker_process(pub_settings, name="e2e")
    celery_app.send_task(
        "herald.posts.schedule",
        kwargs={
            "workspace_id": str(integration.workspace_id),
            "integration_id": str(integration.id),
            "content": "sent by another service",
            "scheduled_at": utcnow().isoformat(),
            "idempotency_key": "svc-1",
        },
        headers={"x_correlation_id": "caller-corr-42"},
    )
    wait_until(lambda: statuses()["scheduled"] == 1, 30, "the post to be stored")
    celery_app.send_task("herald.posts.dispatch_due")  # what beat sends every tick
    wait_until(lambda: statuses()["published"] == 1, 30, "the post to be published")

    with service_session() as s:
        post = s.scalars(select(Post)).one()
        attempt = s.scalars(select(PublishAttempt)).one()
        assert post.correlation_id == "caller-corr-42"
        assert attempt.correlation_id == "caller-corr-42"
        assert attempt.task_id
    assert [p["text"] for p in sandbox.posts("mastodon")] == ["sent by another service"]


def test_rabbitmq_keeps_its_messages_and_is_never_taken_for_emptied(pub_settings: Settings) -> None:
    """Durable queues, persistent messages: a RabbitMQ restart loses no publish message, so the
    sweep asks nothing of it (and sends nothing again)."""
    on_rabbit = pub_settings.model_copy(update={"broker_url": AMQP_URL})
    assert not restarts.messages_lost(broker_connection(on_rabbit), [])
