"""Fairness, precision and rate of the dispatcher: caps inside the claim, workspaces in turn,
posts handed over ahead of their time but never published before it, batch after batch."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import insert, update

from herald.models import Integration, Post, PostStatus, utcnow
from herald.publishing.dispatch import claim_due_posts, dispatch_due_posts
from herald.publishing.publisher import publish_post
from herald.publishing.sweep import requeue_lost
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_workspace
from tests.fixtures.publishing import ConnectFn, fresh


def bulk_posts(integration: Integration, count: int, *, minutes_ago: float = 10) -> None:
    """``count`` posts of ``integration``, all due (older than anything else in the test)."""
    due = utcnow() - timedelta(minutes=minutes_ago)
    rows = [
        {
            "id": uuid.uuid4(),
            "workspace_id": integration.workspace_id,
            "integration_id": integration.id,
            "content": f"bulk {i}",
            "scheduled_at": due,
            "status": PostStatus.SCHEDULED,
            "idempotency_key": uuid.uuid4().hex,
        }
        for i in range(count)
    ]
    with service_session() as s:
        s.execute(insert(Post), rows)


def other_workspace(provider: str = "mastodon") -> Integration:
    with service_session() as s:
        return make_integration(s, make_workspace(s), provider=provider)


def test_posts_over_a_provider_cap_leave_the_batch_to_everyone_else(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    x, mastodon = connect("x"), connect("mastodon")
    bulk_posts(x, 5000)
    others = {new_post(mastodon).id for _ in range(3)}
    elsewhere = new_post(other_workspace("bluesky")).id
    settings = pub_settings.model_copy(
        update={"provider_concurrency": {"x": 4}, "dispatch_batch_size": 50}
    )
    with service_session() as s:
        first = claim_due_posts(s, settings)
    by_id = {c.post_id for c in first}
    assert others | {elsewhere} <= by_id  # the older X posts did not fill the batch
    assert len(by_id) == 4 + 3 + 1  # X got exactly its cap
    with service_session() as s:
        assert claim_due_posts(s, settings) == []  # X stays at its cap until those finish


def test_a_workspace_with_thousands_due_takes_turns_with_another(
    connect: ConnectFn, pub_settings: Settings, new_post: Callable[..., Post]
) -> None:
    bulk_posts(connect("mastodon"), 5000)  # due ten minutes before the other workspace's post
    quiet = new_post(other_workspace()).id
    settings = pub_settings.model_copy(update={"dispatch_batch_size": 10})
    with service_session() as s:
        first = claim_due_posts(s, settings)
    assert len(first) == 10
    # Sent second: after the other workspace's oldest post, not behind its whole batch.
    assert [c.post_id for c in first].index(quiet) == 1


def test_a_post_due_within_the_tick_is_handed_over_early_but_not_published_early(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    pub_settings: Settings,
    sandbox: SandboxClient,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    soon = new_post(integration, scheduled_at=utcnow() + timedelta(seconds=30)).id
    later = new_post(integration, scheduled_at=utcnow() + timedelta(seconds=90)).id
    settings = pub_settings.model_copy(update={"dispatch_lookahead_s": 60})
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    assert claimed.post_id == soon
    assert 20 < claimed.countdown() <= 30
    assert fresh(Post, later).status is PostStatus.SCHEDULED

    # Delivered before its time (a clock apart): the claim refuses it, nothing is sent.
    with service_session() as s:
        outcome = publish_post(s, soon, settings, keys)
    assert outcome.kind == "not_due"
    assert outcome.not_before is not None
    assert fresh(Post, soon).status is PostStatus.QUEUED
    assert sandbox.posts("mastodon") == []

    # Its time comes (moved here rather than waited for): published once.
    with service_session() as s:
        s.execute(
            update(Post).where(Post.id == soon).values(scheduled_at=utcnow() - timedelta(seconds=1))
        )
    with service_session() as s:
        assert publish_post(s, soon, settings, keys).status is PostStatus.PUBLISHED
    assert len(sandbox.posts("mastodon")) == 1


def test_a_lost_early_message_is_sent_again_by_the_sweep(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    post = new_post(connect("mastodon"), scheduled_at=utcnow() + timedelta(seconds=30)).id
    settings = pub_settings.model_copy(update={"dispatch_lookahead_s": 60})
    with service_session() as s:
        (_claimed,) = claim_due_posts(s, settings)  # its countdown message is then lost
    with service_session() as s:
        past = utcnow() - timedelta(seconds=settings.queued_timeout_s + 1)
        s.execute(update(Post).where(Post.id == post).values(queued_at=past))
    with service_session() as s:
        (again,) = requeue_lost(s, settings)
    assert again.post_id == post
    assert again.countdown() > 0


def test_by_default_a_tick_claims_what_is_due_before_a_late_next_tick(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    # A tick of 20 s looks 30 s ahead: a next tick that runs late still finds nothing it
    # should have claimed earlier.
    settings = pub_settings.model_copy(
        update={"dispatch_interval_s": 20.0, "dispatch_lookahead_s": None}
    )
    integration = connect("mastodon")
    after_a_tick = new_post(integration, scheduled_at=utcnow() + timedelta(seconds=25)).id
    beyond = new_post(integration, scheduled_at=utcnow() + timedelta(seconds=40)).id
    with service_session() as s:
        (claimed,) = claim_due_posts(s, settings)
    assert claimed.post_id == after_a_tick
    assert 15 < claimed.countdown() <= 25
    assert fresh(Post, beyond).status is PostStatus.SCHEDULED


def _tick(settings: Settings) -> list[list[uuid.UUID]]:
    """One dispatch_due tick; the batches it handed over, in order."""
    batches: list[list[uuid.UUID]] = []
    with service_session() as s:
        count = dispatch_due_posts(s, settings, lambda c: batches.append([p.post_id for p in c]))
    assert count == sum(len(b) for b in batches)
    return batches


def test_a_tick_claims_batch_after_batch_while_they_come_back_full(
    connect: ConnectFn, pub_settings: Settings
) -> None:
    """One batch per tick capped the dispatcher at batch/interval posts a second (100/s by
    default), below what the workers publish: at a steady 110 posts/s the delay grew without
    bound (make bench, latency phase). A tick now claims until a batch comes back short."""
    bulk_posts(connect("mastodon"), 12)
    settings = pub_settings.model_copy(
        update={"dispatch_batch_size": 5, "dispatch_max_queued": 1000, "dispatch_interval_s": 60}
    )
    batches = _tick(settings)
    assert [len(b) for b in batches] == [5, 5, 2]
    assert len({p for b in batches for p in b}) == 12
    assert _tick(settings) == []  # nothing left due


def test_a_tick_stops_at_the_backpressure_bound_and_at_the_end_of_its_interval(
    connect: ConnectFn, pub_settings: Settings
) -> None:
    bulk_posts(connect("mastodon"), 30)
    bounded = pub_settings.model_copy(
        update={"dispatch_batch_size": 5, "dispatch_max_queued": 7, "dispatch_interval_s": 60}
    )
    assert [len(b) for b in _tick(bounded)] == [5, 2]  # 7 queued: no room for more
    with service_session() as s:  # the workers took those
        s.execute(update(Post).where(Post.status == PostStatus.QUEUED).values(status="published"))
    brief = bounded.model_copy(update={"dispatch_max_queued": 1000, "dispatch_interval_s": 1e-9})
    assert [len(b) for b in _tick(brief)] == [5]  # the next tick carries on
