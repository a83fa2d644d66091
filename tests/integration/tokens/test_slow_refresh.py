"""A token refresh slower than the publish backoff, on real worker processes: the post waits
for the refresh instead of being sent again with the refused token, and the grant survives.

Before: the post was published again with the old token after the first backoff, each 401
sent another refresh (without the version it saw) that rotated the token just issued, and
after the attempts ran out the integration was marked ``needs_reauth`` and the post failed
although the grant was valid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from herald.models import Integration, IntegrationStatus, Post, PostStatus, PublishAttempt
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.database import service_session
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.tokens.support import outcomes, revoked_tokens, token_calls, until


def dispatch_tick(settings: Settings) -> None:
    """What beat's ``dispatch_due`` does: claim, commit, then send ``publish``."""
    with service_session() as s:
        claimed = claim_due_posts(s, settings)
    for post in claimed:
        publish_signature(post).apply_async()


@pytest.mark.slow
def test_a_refresh_slower_than_the_backoff_calls_once_and_the_post_is_published(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 5.0})
    assert settings.publish_backoff_s < 0.5
    integration = connect("x")
    post = new_post(integration, content="published after one slow refresh")
    sandbox.expire_tokens("x", integration.external_account_id)
    sandbox.inject("x", "latency", ms=1500, path="oauth2/token")  # ≫ the 0.2 s backoff
    start_worker_process(settings, name="w1", concurrency=2)

    def published() -> bool:
        dispatch_tick(settings)  # a beat tick every poll
        return fresh(Post, post.id).status is PostStatus.PUBLISHED

    until(published, "the post published", timeout=60)

    assert len(token_calls(sandbox, "x")) == 1
    assert revoked_tokens(sandbox, "x", integration.external_account_id) == []
    after = fresh(Integration, integration.id)
    assert (after.status, after.token_version) == (IntegrationStatus.ACTIVE, 2)
    assert outcomes(integration.id) == ["refreshed"]
    with service_session() as s:
        attempts: list[Any] = list(
            s.scalars(
                select(PublishAttempt.outcome)
                .where(PublishAttempt.post_id == post.id)
                .order_by(PublishAttempt.attempt_number)
            )
        )
    assert attempts == ["auth_expired", "published"]
    assert [p["text"] for p in sandbox.posts("x")] == ["published after one slow refresh"]
