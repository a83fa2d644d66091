"""A publish whose access token is refused: the post waits for a refresh of the tokens it
used (not for a backoff), and the publish path never declares the grant dead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from herald.models import Integration, IntegrationStatus, Post, PostStatus, utcnow
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import run_publish


def test_a_refused_token_makes_the_post_wait_for_a_refresh_of_that_version(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    post, sibling = new_post(integration), new_post(integration, content="also due")
    sandbox.expire_tokens("x", integration.external_account_id)

    outcome = run_publish(post, pub_settings, keys)

    assert (outcome.refresh, outcome.seen_token_version) == (integration.id, 1)
    waiting = fresh(Post, post.id)
    lease = timedelta(seconds=pub_settings.token_refresh_lease_s)
    assert waiting.status is PostStatus.RETRYING
    assert waiting.next_attempt_at > utcnow() + lease - timedelta(minutes=1)
    marked = fresh(Integration, integration.id)
    assert marked.status is IntegrationStatus.REFRESH_NEEDED
    assert marked.refresh_lease_owner is None  # pending: the refresh sent for it claims it
    assert marked.refresh_lease_until > utcnow()
    with service_session() as s:  # nor is the sibling sent out with the refused token
        assert claim_due_posts(s, pub_settings) == []
    assert fresh(Post, sibling.id).status is PostStatus.SCHEDULED


def test_a_token_refused_again_and_again_fails_the_post_but_never_the_integration(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    post = new_post(integration)
    sandbox.expire_tokens("x", integration.external_account_id)
    budget = pub_settings.publish_max_attempts * 2  # waiting for a token is not a failure

    statuses = [run_publish(post, pub_settings, keys).status for _ in range(budget)]

    assert statuses == [PostStatus.RETRYING] * (budget - 1) + [PostStatus.FAILED]
    assert fresh(Post, post.id).last_error_code == "auth_expired"
    # Only a refresh that the network answers invalid_grant may say the grant is dead.
    assert fresh(Integration, integration.id).status is IntegrationStatus.REFRESH_NEEDED
