"""The dispatcher is the only way into ``publish``: a refresh makes the posts waiting for it
due and sends nothing; the dispatcher leaves an integration alone while it refreshes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from herald.models import Post, PostStatus, PublishAttempt, utcnow
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.tokens.support import refresh_attempts, set_integration, until, wait_for_auth


def publish_attempts(post: Post) -> int:
    with service_session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(PublishAttempt)
                .where(PublishAttempt.post_id == post.id)
            )
            or 0
        )


def test_a_refresh_makes_the_waiting_posts_due_and_never_sends_publish_itself(
    process_settings: Settings,
    worker: Any,
    celery_app: Any,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
) -> None:
    integration = connect("x")
    waiting, named = new_post(integration, content="waits"), new_post(integration, content="named")
    wait_for_auth(waiting.id)
    wait_for_auth(named.id)
    # An old sender's payload: then_publish still accepted, now meaning "make it due".
    celery_app.send_task(
        "herald.tokens.refresh",
        kwargs={"integration_id": str(integration.id), "then_publish": str(named.id)},
    )
    until(lambda: [a for a in refresh_attempts(integration.id) if a.finished_at], "the refresh")

    for post in (waiting, named):
        stored = fresh(Post, post.id)
        assert stored.status is PostStatus.RETRYING
        assert stored.next_attempt_at <= utcnow()
        assert publish_attempts(post) == 0
    assert sandbox.posts("x") == []

    with service_session() as s:  # one dispatcher tick
        claimed = claim_due_posts(s, process_settings)
    for post in claimed:
        publish_signature(post).apply_async()
    assert {c.post_id for c in claimed} == {waiting.id, named.id}
    until(
        lambda: all(fresh(Post, p.id).status is PostStatus.PUBLISHED for p in (waiting, named)),
        "both posts published",
    )


def test_the_dispatcher_leaves_an_integration_mid_refresh_alone_until_its_lease_ends(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    refreshing, other = connect("x"), connect("mastodon")
    held, free = new_post(refreshing), new_post(other)
    set_integration(refreshing.id, refresh_lease_until=utcnow() + timedelta(minutes=1))

    def tick() -> set[Any]:
        with service_session() as s:
            return {c.post_id for c in claim_due_posts(s, pub_settings)}

    assert tick() == {free.id}
    set_integration(refreshing.id, refresh_lease_until=utcnow() - timedelta(seconds=1))
    assert tick() == {held.id}
