"""Each provider outcome drives the post's status machine as DESIGN.md §3 says.

The publish run is called directly (the task body), against the sandbox over real HTTP and
the real Postgres; the worker-level behaviour is covered in test_pipeline.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    PublishAttempt,
    utcnow,
)
from herald.publishing.dispatch import claim_due_posts
from herald.publishing.publisher import publish_post
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh


def run_publish(post: Post, settings: Settings, keys: KeyRing) -> Any:
    """Queue the post (as the dispatcher would) and run one publish attempt."""
    with service_session() as s:
        s.execute(
            Post.__table__.update()
            .where(Post.id == post.id, Post.status.in_(["scheduled", "retrying"]))
            .values(status="queued", queued_at=utcnow())
        )
    with service_session() as s:
        return publish_post(s, post.id, settings, keys)


def attempts_of(post: Post) -> list[PublishAttempt]:
    with service_session() as s:
        return list(
            s.scalars(
                select(PublishAttempt)
                .where(PublishAttempt.post_id == post.id)
                .order_by(PublishAttempt.attempt_number)
            )
        )


def test_success_publishes_once_with_the_network_id_and_url(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("mastodon"), content="Hello, fediverse")
    outcome = run_publish(post, pub_settings, keys)
    stored = fresh(Post, post.id)
    assert outcome.status is PostStatus.PUBLISHED
    assert stored.status is PostStatus.PUBLISHED
    remote = sandbox.posts("mastodon")
    assert [p["text"] for p in remote] == ["Hello, fediverse"]
    assert stored.external_id == str(remote[0]["id"])
    assert stored.external_url
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.attempt_number) == ("published", 1)
    assert attempt.finished_at is not None
    assert attempt.latency_ms is not None


def test_rate_limit_waits_for_the_reset_and_pauses_the_integrations_other_posts(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    first = new_post(integration, content="first")
    second = new_post(integration, content="second")
    sandbox.inject("x", "rate_limit", times=1)

    outcome = run_publish(first, pub_settings, keys)
    assert outcome.status is PostStatus.RETRYING
    stored = fresh(Post, first.id)
    paused = fresh(Integration, integration.id)
    assert stored.last_error_code == "rate_limited"
    assert paused.rate_limited_until is not None
    assert paused.rate_limited_until > utcnow()
    assert stored.next_attempt_at == paused.rate_limited_until

    # The other post of the paused integration is not dispatched until the reset.
    with service_session() as s:
        claimed = {c.post_id for c in claim_due_posts(s, pub_settings)}
    assert second.id not in claimed
    assert first.id not in claimed
    assert sandbox.posts("x") == []


def test_transient_errors_back_off_then_fail_with_the_last_error_at_the_bound(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("mastodon"))
    sandbox.inject("mastodon", "error", status=503, message="try later", path="statuses")
    statuses = []
    for _ in range(pub_settings.publish_max_attempts):
        statuses.append(run_publish(post, pub_settings, keys).status)
        stored = fresh(Post, post.id)
        if stored.status is PostStatus.RETRYING:
            assert stored.next_attempt_at > utcnow() - timedelta(seconds=1)
    assert statuses == [PostStatus.RETRYING, PostStatus.RETRYING, PostStatus.FAILED]
    stored = fresh(Post, post.id)
    assert stored.attempts == 3
    assert stored.last_error_code == "transient"
    assert [a.outcome for a in attempts_of(post)] == ["transient"] * 3
    assert sandbox.posts("mastodon") == []


def test_permanent_refusal_fails_with_the_networks_message(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("mastodon"))
    sandbox.inject(
        "mastodon", "error", status=403, message="This action is outside the authorized scopes"
    )
    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert "outside the authorized scopes" in stored.last_error_message


def test_content_over_the_networks_limit_fails_naming_the_rule_without_a_call(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("bluesky"), content="é" * 301)
    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "content_invalid"
    assert "300" in stored.last_error_message
    assert sandbox.posts("bluesky") == []


def test_expired_token_is_refreshed_then_the_post_publishes_with_the_rotated_token(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    from herald.tokens.refresh import refresh_integration

    integration = connect("x")
    post = new_post(integration, content="after a refresh")
    sandbox.expire_tokens("x", integration.external_account_id)

    outcome = run_publish(post, pub_settings, keys)
    assert outcome.status is PostStatus.RETRYING
    assert outcome.refresh == integration.id
    assert fresh(Integration, integration.id).status is IntegrationStatus.REFRESH_NEEDED

    with service_session() as s:
        refreshed = refresh_integration(s, integration.id, pub_settings, keys)
    assert refreshed.refreshed
    after = fresh(Integration, integration.id)
    assert after.token_version == integration.token_version + 1
    assert after.status is IntegrationStatus.ACTIVE

    assert run_publish(post, pub_settings, keys).status is PostStatus.PUBLISHED
    assert [p["text"] for p in sandbox.posts("x")] == ["after a refresh"]
    assert [a.outcome for a in attempts_of(post)] == ["auth_expired", "published"]


def test_lost_answer_is_recovered_by_the_idempotency_key_without_a_duplicate(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("mastodon"), content="applied, then the line dropped")
    sandbox.inject("mastodon", "drop", applied=True, method="POST", path="statuses", times=1)
    assert run_publish(post, pub_settings, keys).status is PostStatus.PUBLISHED
    assert len(sandbox.posts("mastodon")) == 1
    (attempt,) = attempts_of(post)
    assert attempt.outcome == "published"


def test_ambiguous_answer_is_reconciled_by_lookup_where_the_network_has_no_key(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("x"), content="applied, then a 500")
    sandbox.inject("x", "error", status=500, applied=True, method="POST", path="tweets", times=1)
    assert run_publish(post, pub_settings, keys).status is PostStatus.PUBLISHED
    remote = sandbox.posts("x")
    assert len(remote) == 1
    (attempt,) = attempts_of(post)
    assert attempt.outcome == "reconciled"
    assert fresh(Post, post.id).external_id == str(remote[0]["id"])


def test_ambiguous_answer_goes_to_review_where_the_network_cannot_confirm(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("telegram"), content="did it arrive?")
    sandbox.inject("telegram", "drop", applied=True, method="POST", times=1)
    assert run_publish(post, pub_settings, keys).status is PostStatus.NEEDS_REVIEW
    stored = fresh(Post, post.id)
    assert "cannot read a chat back" in stored.last_error_message
    assert len(sandbox.posts("telegram")) == 1  # sent once, never twice


def test_a_failed_reconcile_lookup_sends_the_post_to_review_never_again(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("x"), content="applied, the line dropped, then the timeline failed")
    sandbox.inject("x", "drop", applied=True, method="POST", path="/2/tweets", times=1)
    sandbox.inject("x", "error", status=503, method="GET", path="/tweets")

    assert run_publish(post, pub_settings, keys).status is PostStatus.NEEDS_REVIEW

    stored = fresh(Post, post.id)
    assert "the lookup failed" in stored.last_error_message
    (attempt,) = attempts_of(post)
    assert attempt.outcome == "needs_review"
    publishes = [
        e for e in sandbox.requests("x") if e["method"] == "POST" and e["path"] == "/2/tweets"
    ]
    assert len(publishes) == 1
    assert len(sandbox.posts("x")) == 1


def test_a_post_claimed_elsewhere_is_left_alone(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("mastodon"), status="publishing")
    with service_session() as s:
        outcome = publish_post(s, post.id, pub_settings, keys)
    assert outcome.status is None
    assert sandbox.posts("mastodon") == []


def test_a_deliberate_retry_gets_a_fresh_attempt_budget(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    # Three attempts used before an operator retried it: the budget counts from there.
    post = new_post(connect("mastodon"), attempts=3, attempts_at_reschedule=3)
    sandbox.inject("mastodon", "error", status=503, path="statuses")
    assert run_publish(post, pub_settings, keys).status is PostStatus.RETRYING
    stored = fresh(Post, post.id)
    assert stored.attempts == 4
    (attempt,) = attempts_of(post)
    assert attempt.attempt_number == 4


def test_an_integration_without_an_adapter_fails_its_post_with_a_clear_reason(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    with service_session() as s:
        s.execute(
            Integration.__table__.update()
            .where(Integration.id == integration.id)
            .values(provider="myspace")
        )
    post = new_post(integration)
    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "provider_unsupported"
    assert "myspace" in stored.last_error_message
    assert attempts_of(post) == []


def test_the_sweep_goes_on_past_a_post_it_cannot_resolve(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    from herald.publishing.sweep import resolve_dead_workers

    long_ago = utcnow() - timedelta(hours=1)
    broken = connect("telegram")
    with service_session() as s:
        s.execute(
            Integration.__table__.update()
            .where(Integration.id == broken.id)
            .values(provider="myspace")
        )
    new_post(broken, status="publishing", publishing_started_at=long_ago - timedelta(minutes=1))
    fine = new_post(connect("telegram"), status="publishing", publishing_started_at=long_ago)
    with service_session() as s:
        results = resolve_dead_workers(s, pub_settings, keys)
    assert results == {"resolve_failed": 1, "needs_review": 1}
    assert fresh(Post, fine.id).status is PostStatus.NEEDS_REVIEW
