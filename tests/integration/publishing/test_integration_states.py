"""What happens to the posts of an integration that cannot publish right now: it needs the
user, it is paused by a rate limit, its token cannot be opened, or its posts ran out of
attempts. The publish run is called directly, against the sandbox and the real Postgres."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from herald.models import Integration, IntegrationStatus, Post, PostStatus, utcnow
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import REAL_BASE_URLS, Settings
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import attempts_of, run_publish

NewPost = Callable[..., Post]


def set_integration(integration: Integration, **values: object) -> None:
    with service_session() as s:
        s.execute(update(Integration).where(Integration.id == integration.id).values(**values))


def without_network(settings: Settings, network: str, **update: object) -> Settings:
    """``settings`` (aimed at the sandbox) whose base URL map lacks ``network``, as a
    configuration mistake would leave it (copied, so the settings checks do not run)."""
    urls = {name: f"{settings.sandbox_url}/{name}" for name in REAL_BASE_URLS if name != network}
    return settings.model_copy(update={"sandbox_url": None, "provider_base_urls": urls, **update})


def claimed_now(settings: Settings) -> set[object]:
    with service_session() as s:
        return {c.post_id for c in claim_due_posts(s, settings)}


def test_posts_of_a_disabled_integration_fail_naming_why_without_a_call(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    set_integration(integration, status=IntegrationStatus.DISABLED)
    post = new_post(integration)
    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "integration_disabled"
    assert "reconnect" in stored.last_error_message
    assert (stored.attempts, attempts_of(post)) == (0, [])
    assert sandbox.requests("mastodon") == []


def test_posts_of_an_integration_that_needs_reauth_wait_without_a_call_or_an_attempt(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    queued = new_post(integration, content="queued before the grant died")
    set_integration(integration, status=IntegrationStatus.NEEDS_REAUTH)
    assert run_publish(queued, pub_settings, keys).status is PostStatus.RETRYING
    stored = fresh(Post, queued.id)
    assert (stored.last_error_code, stored.next_attempt_at) == ("integration_needs_reauth", None)
    assert (stored.attempts, attempts_of(queued)) == (0, [])
    due = new_post(integration, content="due while the user is away")
    assert due.id not in claimed_now(pub_settings)
    assert sandbox.requests("mastodon") == []


def test_posts_of_a_paused_integration_wait_for_the_reset_without_spending_an_attempt(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    reset_at = utcnow() + timedelta(minutes=10)
    set_integration(integration, rate_limited_until=reset_at)
    queued = new_post(integration, content="queued before the pause")
    assert run_publish(queued, pub_settings, keys).status is PostStatus.RETRYING
    waiting = fresh(Post, queued.id)
    assert (waiting.attempts, waiting.next_attempt_at) == (0, reset_at)
    assert attempts_of(queued) == []

    due = new_post(integration, content="due during the pause")
    assert due.id not in claimed_now(pub_settings)

    set_integration(integration, rate_limited_until=utcnow() - timedelta(seconds=1))
    assert due.id in claimed_now(pub_settings)
    assert run_publish(due, pub_settings, keys).status is PostStatus.PUBLISHED
    assert fresh(Post, due.id).attempts == 1
    assert [p["text"] for p in sandbox.posts("mastodon")] == ["due during the pause"]


def test_a_token_the_network_refuses_for_good_makes_the_post_wait_for_the_user(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """Mastodon answers a revoked token with 401 (ReauthRequired: its tokens never refresh):
    the integration needs its user (herald.reauth), the post waits for the reconnect naming
    why, nothing is sent again."""

    def posts_sent() -> int:
        return sum(r["method"] == "POST" for r in sandbox.requests("mastodon"))

    integration = connect("mastodon")
    assert sandbox.revoke_token(open_tokens(integration, keys).access_token)
    post = new_post(integration)
    assert run_publish(post, pub_settings, keys).status is PostStatus.RETRYING
    stored = fresh(Post, post.id)
    assert (stored.last_error_code, stored.next_attempt_at) == ("integration_needs_reauth", None)
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("reauth_required", "reauth_required")
    assert fresh(Integration, integration.id).status is IntegrationStatus.NEEDS_REAUTH
    assert sandbox.posts("mastodon") == []
    assert posts_sent() == 1
    # The next post of that integration is not even tried: it waits too.
    later = new_post(integration)
    assert run_publish(later, pub_settings, keys).status is PostStatus.RETRYING
    assert fresh(Post, later.id).last_error_code == "integration_needs_reauth"
    assert posts_sent() == 1


def test_a_token_that_cannot_be_opened_fails_the_post_without_a_call(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration, other = connect("mastodon"), connect("mastodon")
    # Sealed for another integration: the associated data does not match, so it cannot open.
    set_integration(integration, access_token_ciphertext=other.access_token_ciphertext)
    post = new_post(integration)
    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "token_unreadable"
    assert other.access_token_ciphertext not in stored.last_error_message
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("failed", "token_unreadable")
    assert sandbox.requests("mastodon") == []


def test_a_token_sealed_under_a_key_this_process_lacks_retries_the_post_without_a_call(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """A process whose HERALD_TOKEN_KEYS is behind (a key added elsewhere first, in the middle
    of a rollout) cannot judge the token: Herald's configuration, not the post's, so the post is
    tried again later instead of failing, and a process with the key publishes it."""
    integration = connect("mastodon")
    post = new_post(integration)
    behind = KeyRing({"old": bytes(32)}, "old")  # lacks the key the tokens were sealed under

    assert run_publish(post, pub_settings, behind).status is PostStatus.RETRYING
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "token_key_unknown"
    assert keys.active in (stored.last_error_message or "")
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("transient", "token_key_unknown")
    assert sandbox.requests("mastodon") == []

    assert run_publish(post, pub_settings, keys).status is PostStatus.PUBLISHED
    assert len(sandbox.posts("mastodon")) == 1


def test_rate_limits_fail_a_post_at_twice_its_attempt_budget(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    post = new_post(integration)
    sandbox.inject("mastodon", "rate_limit", method="POST")
    statuses = []
    for _ in range(pub_settings.publish_max_attempts * 2):
        statuses.append(run_publish(post, pub_settings, keys).status)
        set_integration(integration, rate_limited_until=None)  # the reset passed
    assert statuses == [PostStatus.RETRYING] * 5 + [PostStatus.FAILED]
    stored = fresh(Post, post.id)
    assert (stored.attempts, stored.last_error_code) == (6, "rate_limited")
    assert sandbox.posts("mastodon") == []


def test_a_network_missing_from_the_configuration_fails_its_posts_with_the_reason(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """Herald's configuration error fails the post once, clearly, instead of leaving it queued
    for the sweep to re-enqueue for ever."""
    settings = without_network(pub_settings, "x")
    post = new_post(connect("x"))
    assert run_publish(post, settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "provider_misconfigured"
    assert "HERALD_PROVIDER_BASE_URLS" in stored.last_error_message
    assert "'x'" in stored.last_error_message
    assert attempts_of(post) == []
    assert sandbox.requests("x") == []
