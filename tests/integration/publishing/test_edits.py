"""Edits and cancels racing the dispatcher's claim, and the ``herald.posts.reschedule`` /
``herald.posts.cancel`` tasks on a real worker: a post is never published in a form that an
accepted edit replaced, nor at all once a cancel was accepted."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from herald import reauth
from herald.contracts import PostChanges
from herald.models import (
    DeadLetter,
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    utcnow,
)
from herald.providers.base import AuthExpired
from herald.publishing import editing
from herald.publishing.dispatch import claim_due_posts
from herald.publishing.publisher import publish_post
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.refresh import make_due
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh

TRIALS = 6


def _race(first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
    """Run both at once (released together); their results, an exception standing for one."""
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def run(index: int, work: Callable[[], Any]) -> None:
        start.wait(timeout=30)
        try:
            results[index] = work()
        except Exception as exc:  # the refused side of the race
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _claim(settings: Settings) -> list[Any]:
    with service_session() as s:
        return [c.post_id for c in claim_due_posts(s, settings)]


def _publish_whatever_is_due(settings: Settings, keys: KeyRing) -> None:
    for post_id in _claim(settings):
        with service_session() as s:
            publish_post(s, post_id, settings, keys)


def test_an_edit_or_a_cancel_racing_the_claim_never_publishes_the_old_form(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    for trial in range(TRIALS):
        post = new_post(integration, content=f"old {trial}")
        changes = PostChanges(content=f"new {trial}")

        def edit(post: Post = post, changes: PostChanges = changes) -> Post:
            with service_session() as s:
                return editing.edit_post(s, post.workspace_id, post.id, changes, pub_settings)

        edited, _ = _race(edit, lambda: _claim(pub_settings))
        if fresh(Post, post.id).status is PostStatus.QUEUED:  # the claim won
            with service_session() as s:
                publish_post(s, post.id, pub_settings, keys)
        _publish_whatever_is_due(pub_settings, keys)
        accepted = isinstance(edited, Post)
        if not accepted:
            assert isinstance(edited, editing.PostNotEditable), edited
        texts = [p["text"] for p in sandbox.posts("mastodon")]
        assert f"new {trial}" in texts if accepted else f"old {trial}" in texts
        assert f"old {trial}" not in texts if accepted else f"new {trial}" not in texts

        doomed = new_post(integration, content=f"cancel me {trial}")

        def cancel(post: Post = doomed) -> Post:
            with service_session() as s:
                return editing.cancel_post(s, post.workspace_id, post.id)

        cancelled, _ = _race(cancel, lambda: _claim(pub_settings))
        if fresh(Post, doomed.id).status is PostStatus.QUEUED:
            with service_session() as s:
                publish_post(s, doomed.id, pub_settings, keys)
        texts = [p["text"] for p in sandbox.posts("mastodon")]
        if isinstance(cancelled, Post):
            assert f"cancel me {trial}" not in texts
            assert fresh(Post, doomed.id).status is PostStatus.CANCELLED
        else:  # cancelling a queued post wins too: only publishing is past the point of no return
            raise AssertionError(f"a post not yet publishing could not be cancelled: {cancelled}")
    assert len({p["text"] for p in sandbox.posts("mastodon")}) == TRIALS


def test_reschedule_and_cancel_tasks_do_what_the_api_does_and_refuse_into_dead_letters(
    process_settings: Settings,
    worker: Any,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    celery_app: Any,
) -> None:
    integration = connect("mastodon")
    later = (utcnow() + timedelta(hours=3)).replace(microsecond=0)
    post = new_post(integration, scheduled_at=utcnow() + timedelta(hours=1), content="draft one")
    claimed = new_post(integration, status=PostStatus.QUEUED, content="already claimed")
    doomed = new_post(integration, scheduled_at=utcnow() + timedelta(hours=1))
    workspace = str(integration.workspace_id)

    celery_app.send_task(
        "herald.posts.reschedule",
        kwargs={
            "workspace_id": workspace,
            "post_id": str(post.id),
            "content": "final words",
            "scheduled_at": later.isoformat(),
            "expected_version": 1,
        },
    )
    celery_app.send_task(
        "herald.posts.reschedule",
        kwargs={"workspace_id": workspace, "post_id": str(claimed.id), "content": "too late"},
    )
    celery_app.send_task(
        "herald.posts.cancel", kwargs={"workspace_id": workspace, "post_id": str(doomed.id)}
    )

    eventually(lambda: fresh(Post, post.id).version == 2, what="the reschedule")
    eventually(lambda: fresh(Post, doomed.id).status is PostStatus.CANCELLED, what="the cancel")
    stored = fresh(Post, post.id)
    assert (stored.content, stored.scheduled_at) == ("final words", later)

    def letters() -> list[DeadLetter]:
        with service_session() as s:
            return list(s.scalars(select(DeadLetter)))

    [letter] = eventually(letters, what="the refused reschedule's dead letter")
    assert letter.task_name == "herald.posts.reschedule"
    assert letter.reason.startswith("post_not_editable")
    assert fresh(Post, claimed.id).content == "already claimed"


@pytest.mark.parametrize("released_by", ["token refresh", "reconnect"])
def test_a_waiting_post_moved_later_stays_waiting_for_its_new_time_when_released(
    pub_settings: Settings, connect: ConnectFn, new_post: Callable[..., Post], released_by: str
) -> None:
    """A ``retrying`` post waiting for a token is moved three days ahead; then its wait ends
    (a refresh, the user reconnecting). It is due at its new time, not now: before, it was
    claimed at once and handed over with a three-day countdown no broker holds."""
    integration = connect("mastodon")
    later = utcnow() + timedelta(days=3)
    post = new_post(
        integration,
        status=PostStatus.RETRYING,
        last_error_code=AuthExpired.code,
        next_attempt_at=utcnow() + timedelta(minutes=5),
        attempts=1,
    )
    with service_session() as s:
        editing.edit_post(
            s, integration.workspace_id, post.id, PostChanges(scheduled_at=later), pub_settings
        )
    with service_session() as s:
        if released_by == "token refresh":
            assert make_due(s, integration.id) == 1
        else:
            stored = s.get(Integration, integration.id)
            assert stored is not None
            assert reauth.reconnected(s, stored, previous_status=IntegrationStatus.ACTIVE) == 1

    stored_post = fresh(Post, post.id)
    assert stored_post.status is PostStatus.RETRYING
    assert stored_post.next_attempt_at == stored_post.scheduled_at
    assert _claim(pub_settings) == []


def test_the_dispatcher_hands_over_no_retrying_post_before_its_scheduled_time(
    pub_settings: Settings, connect: ConnectFn, new_post: Callable[..., Post]
) -> None:
    """Whatever made it due, a ``retrying`` post is not handed over before its
    ``scheduled_at`` (less the dispatcher's lookahead)."""
    post = new_post(
        connect("mastodon"),
        status=PostStatus.RETRYING,
        scheduled_at=utcnow() + timedelta(days=3),
        next_attempt_at=utcnow() - timedelta(seconds=1),
        attempts=1,
    )
    assert _claim(pub_settings) == []
    assert fresh(Post, post.id).status is PostStatus.RETRYING
