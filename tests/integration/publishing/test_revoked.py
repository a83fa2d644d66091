"""A publish message revoked by an operator (Flower's revoke, ``celery control revoke``) on a
real worker: the post fails, saying why, instead of waiting as ``queued`` until the sweep takes
the message for lost and publishes it after all. An expired message is not a revoke: its post
stays queued for the sweep to send again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from herald.models import Post, PostStatus, utcnow
from herald.publishing.dispatch import Claimed, claim_due_posts
from herald.publishing.editing import REVOKED_CODE
from herald.publishing.sweep import requeue_lost
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, fresh


def _send(broker: Broker, post: Claimed, task_id: str, **options: object) -> None:
    signature = publish_signature(post)
    broker.app.send_task(
        str(signature.task),
        kwargs=signature.kwargs,
        task_id=task_id,
        **{**signature.options, **options},
    )


def test_a_revoked_publish_fails_its_post_and_an_expired_one_leaves_it_to_the_sweep(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    integration = connect("mastodon")
    expired = new_post(integration, content="sent with an expiry already past")
    revoked = new_post(integration, content="revoked by an operator before it ran")
    start_worker_process(pub_settings, name="revoking", broker=redis_broker)
    with service_session() as s:
        claimed = {post.post_id: post for post in claim_due_posts(s, pub_settings)}
    assert set(claimed) == {expired.id, revoked.id}

    revoked_task = str(uuid.uuid4())
    replies = redis_broker.app.control.revoke(revoked_task, reply=True, limit=1, timeout=10)
    assert replies, "the worker did not answer the revoke"
    # In the queue's order: the expired message is handled before the revoked one.
    _send(redis_broker, claimed[expired.id], str(uuid.uuid4()), expires=utcnow() - timedelta(1))
    _send(redis_broker, claimed[revoked.id], revoked_task)

    failed = eventually(
        lambda: fresh(Post, revoked.id),
        30,
        "the revoked post to fail",
        until=lambda post: post.status is PostStatus.FAILED,
    )
    assert failed.last_error_code == REVOKED_CODE
    assert revoked_task in (failed.last_error_message or "")
    assert failed.attempts == 0  # never claimed: no attempt spent, nothing sent
    assert fresh(Post, expired.id).status is PostStatus.QUEUED
    assert sandbox.posts("mastodon") == []

    # The sweep sends the expired post's message again; the failed post is not its business.
    with service_session() as s:
        lost = {"queued_timeout_s": 0.01, "send_timeout_s": 0.01}
        requeued = requeue_lost(s, pub_settings.model_copy(update=lost))
    assert [post.post_id for post in requeued] == [expired.id]
    for post in requeued:
        redis_broker.send(publish_signature(post))
    eventually(
        lambda: fresh(Post, expired.id),
        30,
        "the expired post to be published by its new message",
        until=lambda post: post.status is PostStatus.PUBLISHED,
    )
    assert [p["text"] for p in sandbox.posts("mastodon")] == ["sent with an expiry already past"]
    assert fresh(Post, revoked.id).status is PostStatus.FAILED
