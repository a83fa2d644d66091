"""Posts due at once go to the workers several to a message (``herald.posts.publish_many``),
on real worker processes, real Postgres, the sandbox, and each broker: each post is claimed,
sent and recorded as ``publish`` would, once, under its own correlation and trace; a run out of
time sends the posts it did not start on; a pool process killed mid-message loses and
duplicates nothing; a revoked message fails its posts; a malformed one is refused.

Tests taking ``broker`` run on Redis and on RabbitMQ (tests/fixtures/brokers.py).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from functools import partial
from typing import Any

import pytest
from celery import Signature
from sqlalchemy import select, update

from herald.celery_app import app
from herald.contracts import PUBLISH_MANY_MAX
from herald.models import DeadLetter, Integration, Post, PostStatus, PublishAttempt
from herald.publishing.dispatch import Claimed, claim_due_posts, dispatch_due_posts
from herald.publishing.editing import REVOKED_CODE
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import (
    publish_many_signature,
    publish_messages,
    resend_lost,
    send_claimed,
    to_publish,
)
from herald.telemetry.context import process_gone, process_name
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker, WorkerProcess
from tests.fixtures.publishing import ConnectFn, due_posts, fresh
from tests.integration.publishing.test_lost_pool_process import pool_children
from tests.integration.publishing.test_pipeline import statuses, wait_until

#: Several to a message as soon as more than 4 are due, at most 5 to one.
TOGETHER = {"publish_many_max": 5, "publish_many_spread": 4}


def traced(count: int) -> dict[uuid.UUID, tuple[str, str]]:
    """Give every post a correlation id and a stored trace context, as the API would; returns
    each post's (correlation id, trace id)."""
    stamped: dict[uuid.UUID, tuple[str, str]] = {}
    with service_session() as s:
        for post_id in s.scalars(select(Post.id)):
            correlation, trace_id = f"req-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
            s.execute(
                update(Post)
                .where(Post.id == post_id)
                .values(
                    correlation_id=correlation,
                    traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
                )
            )
            stamped[post_id] = (correlation, trace_id)
    assert len(stamped) == count
    return stamped


def attempts() -> list[PublishAttempt]:
    with service_session() as s:
        return list(s.scalars(select(PublishAttempt)))


def assert_each_once(sandbox: SandboxClient, count: int, network: str | None = None) -> None:
    """``count`` posts at the network(s), none twice."""
    texts = Counter(p["text"] for p in sandbox.posts(network))
    assert len(texts) == count
    assert max(texts.values()) == 1


def assert_one_reconciled(published: int) -> None:
    """One attempt reconciled after its run was lost, ``published`` others published."""
    outcomes = Counter((a.outcome, a.error_code) for a in attempts())
    assert outcomes == {("reconciled", "worker_lost"): 1, ("published", None): published}


def send_through(broker: Broker, settings: Settings, posts: list[Claimed]) -> None:
    """The dispatcher's hand-over through ``broker``: ``send_claimed`` itself on the run's
    Redis (the process's own app), its messages sent one by one on RabbitMQ (whose test
    virtual host has queues of its own arguments)."""
    if broker.app is app:
        send_claimed(posts, settings=settings)
        return
    for _, signature in publish_messages(posts, settings=settings):
        broker.send(signature)


def mastodon_posts_claimed(connect: ConnectFn, count: int, settings: Settings) -> list[Claimed]:
    """``count`` posts due on one Mastodon account, claimed as the dispatcher claims them."""
    due_posts([connect("mastodon")], count)
    with service_session() as s:
        return claim_due_posts(s, settings)


def one_message(claimed: list[Claimed]) -> Signature:
    """The ``publish_many`` message of ``claimed``, each post with its stored context."""
    return publish_many_signature([to_publish(post) for post in claimed])


@pytest.mark.slow
def test_posts_due_at_once_go_several_to_a_message_each_published_once_in_its_own_trace(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    settings = pub_settings.model_copy(update=TOGETHER)
    integrations = [connect(network) for network in ("mastodon", "bluesky", "telegram")]
    due_posts(integrations, 30)
    stamped = traced(30)
    start_worker_process(settings, name="many", broker=broker)
    with service_session() as s:
        handed = dispatch_due_posts(s, settings, partial(send_through, broker, settings))
    assert handed == 30
    wait_until(lambda: statuses()["published"] == 30, 60, "30 posts published")

    assert_each_once(sandbox, 30)
    runs = attempts()
    assert len(runs) == 30
    assert {a.outcome for a in runs} == {"published"}
    # Several posts to a message (30 due, at least 4 messages, at most 5 posts in one), and one
    # network's posts to each.
    by_message: dict[str | None, list[PublishAttempt]] = {}
    for attempt in runs:
        by_message.setdefault(attempt.task_id, []).append(attempt)
    assert 6 <= len(by_message) < 30
    assert max(len(carried) for carried in by_message.values()) == 5
    assert all(len({a.provider for a in carried}) == 1 for carried in by_message.values())
    # Each attempt ran under its post's own correlation and in its post's own trace.
    for attempt in runs:
        correlation, trace_id = stamped[attempt.post_id]
        assert (attempt.correlation_id, attempt.trace_id) == (correlation, trace_id)


def test_few_posts_due_each_go_in_a_message_of_their_own(
    connect: ConnectFn, pub_settings: Settings
) -> None:
    """Up to ``publish_many_spread`` posts due: one ``publish`` each, as before (nothing waits
    behind another post's call when there is no backlog to share)."""
    settings = pub_settings.model_copy(update=TOGETHER)
    claimed = mastodon_posts_claimed(connect, 4, settings)
    messages = publish_messages(claimed, settings=settings)
    assert [str(signature.task) for _, signature in messages] == ["herald.posts.publish"] * 4


@pytest.mark.slow
def test_a_message_out_of_time_sends_the_posts_it_did_not_start_on(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    """A run starts a post only while one call still fits in its soft time limit; here none
    more does after the first, so each run publishes one post and sends the rest on."""
    one_call = pub_settings.provider_connect_timeout_s + pub_settings.provider_timeout_s
    tight = pub_settings.model_copy(
        update={"task_soft_time_limit_s": int(one_call) + 1, "task_time_limit_s": int(one_call) + 2}
    )
    claimed = mastodon_posts_claimed(connect, 3, tight)
    start_worker_process(tight, name="tight", broker=redis_broker)
    redis_broker.send(one_message(claimed))
    wait_until(lambda: statuses()["published"] == 3, 30, "3 posts published")
    assert len(sandbox.posts("mastodon")) == 3
    runs = attempts()
    assert len(runs) == 3
    assert len({a.task_id for a in runs}) == 3  # the message, the one sent on, and its own


@pytest.mark.slow
def test_a_post_cut_by_the_soft_time_limit_is_reconciled_at_once_and_the_rest_sent_on(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    """The first post's call times out after the network applied it (2.5 s) and its lookup
    takes 2 s more: the run's soft limit (4 s) cuts it mid-lookup. Its post is reconciled one
    call's timeout later, not after ``HERALD_PUBLISHING_TIMEOUT_S`` (10 min); the second post
    is sent on in a message of its own."""
    settings = pub_settings.model_copy(
        update={
            "provider_connect_timeout_s": 0.5,
            "provider_timeout_s": 2.5,
            "task_soft_time_limit_s": 4,
            "task_time_limit_s": 6,
            "publishing_timeout_s": 600.0,
        }
    )
    claimed = mastodon_posts_claimed(connect, 2, settings)
    sandbox.inject("mastodon", "timeout", applied=True, ms=20_000, method="POST", times=1)
    sandbox.inject("mastodon", "latency", ms=2_000, method="GET", times=1)
    start_worker_process(settings, name="cut", concurrency=1, broker=redis_broker)
    redis_broker.send(one_message(claimed))

    wait_until(lambda: statuses()["published"] == 2, 30, "both posts published")
    assert_each_once(sandbox, 2, "mastodon")
    assert_one_reconciled(published=1)


@pytest.mark.slow
def test_a_post_the_database_keeps_failing_holds_up_none_of_its_neighbours(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    """The first post's row is locked (a long transaction elsewhere): its claim runs into the
    statement timeout. The message is retried with that post last, so the other two are
    published while it stays locked; it follows once the lock is gone."""
    claimed = mastodon_posts_claimed(connect, 3, pub_settings)
    start_worker_process(
        pub_settings,
        name="locked",
        concurrency=1,
        broker=redis_broker,
        HERALD_DATABASE_STATEMENT_TIMEOUT_S="1",
    )
    locked = claimed[0].post_id
    with service_session() as holder:
        holder.execute(select(Post.id).where(Post.id == locked).with_for_update())
        redis_broker.send(one_message(claimed))
        wait_until(lambda: statuses()["published"] == 2, 30, "the two unlocked posts published")
        assert fresh(Post, locked).status is PostStatus.QUEUED
    wait_until(lambda: statuses()["published"] == 3, 60, "the locked post once released")
    assert len(sandbox.posts("mastodon")) == 3


#: Timeouts for a post caught at the network: its call hangs 2 s, the run waits 2.5 s.
MID_CALL = {"provider_timeout_s": 2.5, "publishing_timeout_s": 600.0}


def three_posts_first_at_the_network(
    connect: ConnectFn,
    sandbox: SandboxClient,
    settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> WorkerProcess:
    """Three posts in one ``publish_many`` message on a one-process worker, caught while the
    network holds the first (it applies the post and answers 2 s later)."""
    claimed = mastodon_posts_claimed(connect, 3, settings)
    sandbox.inject("mastodon", "timeout", applied=True, ms=2_000, method="POST", times=1)
    worker = start_worker_process(settings, name="killed", concurrency=1, broker=broker)
    broker.send(one_message(claimed))
    eventually(lambda: sandbox.posts("mastodon"), 30, "the network to receive the first post")
    return worker


def assert_each_once_the_first_reconciled(sandbox: SandboxClient, timeout: float) -> None:
    wait_until(lambda: statuses()["published"] == 3, timeout, "3 posts published after the kill")
    assert_each_once(sandbox, 3, "mastodon")
    assert_one_reconciled(published=2)


@pytest.mark.slow
def test_a_pool_process_killed_mid_message_loses_and_duplicates_nothing(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    """The first of three posts is at the network when its process dies: it is reconciled
    (the network has it), and the message goes back to the queue for the other two."""
    settings = pub_settings.model_copy(update=MID_CALL)
    worker = three_posts_first_at_the_network(
        connect, sandbox, settings, start_worker_process, broker
    )
    (child,) = pool_children(worker)
    os.kill(child, signal.SIGKILL)
    assert_each_once_the_first_reconciled(sandbox, 60)
    assert worker.alive()


@pytest.mark.slow
def test_a_worker_killed_whole_mid_message_has_its_held_message_run_again_by_the_next(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    """``kill -9`` of the worker's main process with the first of three posts at the network.
    On Redis the message stayed unacked until the visibility timeout (an hour) and the two
    posts it had not started waited for the sweep's queued timeout (5 min); the next worker,
    which proves the run's process gone, reconciles the first post and puts the message back
    at once. (RabbitMQ gives a dead consumer's messages back by itself.)"""
    settings = pub_settings.model_copy(update=MID_CALL)
    worker = three_posts_first_at_the_network(
        connect, sandbox, settings, start_worker_process, broker
    )
    (child,) = pool_children(worker)
    os.kill(worker.proc.pid, signal.SIGKILL)
    eventually(lambda: process_gone(process_name(child)), 10, "the pool process to die with it")
    start_worker_process(settings, name="successor", concurrency=1, broker=broker)
    assert_each_once_the_first_reconciled(sandbox, 30)


@pytest.mark.slow
def test_processes_lost_on_different_posts_are_progress_not_poison(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    """The pool process dies while each of the first three posts is at the network (memory
    pressure, say): three losses of one message, which refused it as poison after the third,
    leaving its last two posts ``queued`` for the sweep. Each redelivery skips the posts
    already claimed, so the message runs on until every post is published, each once."""
    settings = pub_settings.model_copy(update=MID_CALL)
    claimed = mastodon_posts_claimed(connect, 5, settings)
    sandbox.inject("mastodon", "timeout", applied=True, ms=2_000, method="POST", times=3)
    worker = start_worker_process(settings, name="pressed", concurrency=1, broker=redis_broker)
    redis_broker.send(one_message(claimed))
    for killed in range(1, 4):
        eventually(
            lambda: len(sandbox.posts("mastodon")),
            30,
            "a post at the network",
            until=lambda count, killed=killed: count >= killed,
        )
        (child,) = pool_children(worker)
        os.kill(child, signal.SIGKILL)
        eventually(
            lambda: pool_children(worker),
            20,
            "a new pool process",
            until=lambda children, child=child: bool(children) and child not in children,
        )

    wait_until(lambda: statuses()["published"] == 5, 60, "all 5 posts published")
    assert_each_once(sandbox, 5, "mastodon")
    assert _dead_letters() == []


def test_a_revoked_message_fails_each_of_its_posts(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    claimed = mastodon_posts_claimed(connect, 3, pub_settings)
    start_worker_process(pub_settings, name="revoking", broker=redis_broker)
    task_id = str(uuid.uuid4())
    replies = redis_broker.app.control.revoke(task_id, reply=True, limit=1, timeout=10)
    assert replies, "the worker did not answer the revoke"
    signature = one_message(claimed)
    redis_broker.app.send_task(str(signature.task), kwargs=signature.kwargs, task_id=task_id)

    for post in claimed:
        failed = eventually(
            partial(fresh, Post, post.post_id),
            30,
            "each post of the revoked message to fail",
            until=lambda p: p.status is PostStatus.FAILED,
        )
        assert failed.last_error_code == REVOKED_CODE
        assert task_id in (failed.last_error_message or "")
        assert failed.attempts == 0
    assert sandbox.posts("mastodon") == []


def test_a_malformed_message_is_refused_and_kept_and_its_good_neighbour_runs(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    integration: Integration = connect("mastodon")
    due_posts([integration], 2)
    with service_session() as s:
        claimed = claim_due_posts(s, pub_settings)
    one = str(claimed[0].post_id)
    malformed: dict[str, dict[str, Any]] = {
        "twice": {"posts": [{"post_id": one}, {"post_id": one}]},
        "too many": {"posts": [{"post_id": str(uuid.uuid4())}] * (PUBLISH_MANY_MAX + 1)},
        "none": {"posts": []},
        "bad trace": {"posts": [{"post_id": one, "traceparent": "00-zz-zz-01"}]},
        "unknown field": {"posts": [{"post_id": one, "priority": "high"}]},
    }
    start_worker_process(pub_settings, name="refusing", broker=redis_broker)
    ids = {}
    for label, kwargs in malformed.items():
        ids[label] = str(uuid.uuid4())
        redis_broker.app.send_task("herald.posts.publish_many", kwargs=kwargs, task_id=ids[label])
    redis_broker.send(one_message(claimed))

    wait_until(lambda: statuses()["published"] == 2, 30, "the good message's 2 posts")
    letters = eventually(
        lambda: {letter.task_id: letter for letter in _dead_letters()},
        30,
        "a dead letter for each malformed message",
        until=lambda found: set(ids.values()) <= set(found),
    )
    reasons = {label: letters[task_id].reason for label, task_id in ids.items()}
    assert "each post may appear once" in reasons["twice"]
    assert "at most 50" in reasons["too many"]
    assert "at least 1" in reasons["none"]
    assert "traceparent" in reasons["bad trace"]
    assert "priority" in reasons["unknown field"]
    assert len(sandbox.posts("mastodon")) == 2


def _dead_letters() -> list[DeadLetter]:
    with service_session() as s:
        return list(s.scalars(select(DeadLetter)))


def test_the_sweep_sends_posts_it_finds_lost_one_to_a_message(
    connect: ConnectFn, pub_settings: Settings, redis_broker: Broker
) -> None:
    """A post whose run kills its process takes its message with it (refused as poison in
    the end): sent again by the sweep, it must not take other posts down with it again. (40
    posts due at once would go two to a message under the default settings.)"""
    lost = pub_settings.model_copy(update={"send_timeout_s": 1e-6})
    due_posts([connect("mastodon")], 40)
    with service_session() as s:
        assert len(claim_due_posts(s, lost)) == 40  # claimed, never sent: lost
    with service_session() as s:
        assert resend_lost(s, lost) == 40
    assert redis_broker.queue_sizes()["publish"] == 40
