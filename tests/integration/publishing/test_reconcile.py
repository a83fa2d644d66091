"""Reconciliation finds a post wherever it is in the account's history, and never takes "not
seen" for "not there": what it cannot prove absent goes to review, never to a second send.

The scene is what a worker that died mid-call leaves behind: the post claimed (``publishing``,
an open attempt) and, when the network took it, the post on the account; then the account
keeps posting. The sweep reconciles over real HTTP against the sandbox, on the real Postgres,
and every send is counted in the sandbox's journal.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from herald.models import Integration, Post, PostStatus, PublishAttempt, utcnow
from herald.providers.registry import provider_for
from herald.publishing.claiming import claim
from herald.publishing.scheduling import draft_of
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.credentials import account_of, open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh

#: Every network that reconciles by looking the post up, with what its connection needs.
LOOKUP_NETWORKS: dict[str, dict[str, Any]] = {
    "x": {},
    "mastodon": {},
    "bluesky": {},
    "threads": {},
    "reddit": {"settings": {"subreddit": "herald_test"}},
    "discord": {"settings": {"mode": "bot", "channel_id": "5002", "channels": ["5002"]}},
}
#: The request that publishes, per network (a path substring of the sandbox's journal).
PUBLISH_PATH = {
    "x": "/2/tweets",
    "mastodon": "/api/v1/statuses",
    "bluesky": "createRecord",
    "threads": "/threads_publish",
    "reddit": "/api/submit",
    "discord": "/messages",
}
#: The request that looks the post up, per network.
LOOKUP_PATH = {
    "x": "/tweets",
    "mastodon": "/statuses",
    "bluesky": "getRecord",
    "threads": "/threads",
    "reddit": "/submitted",
    "discord": "/messages",
}
NEWER = 200


def sends(sandbox: SandboxClient, network: str) -> int:
    """Publishing requests the network received (whatever it answered)."""
    return sum(
        1
        for entry in sandbox.requests(network)
        if entry["method"] == "POST" and PUBLISH_PATH[network] in entry["path"]
    )


def worker_died(
    integration: Integration,
    post: Post,
    settings: Settings,
    keys: KeyRing,
    *,
    sent: bool,
    minutes_ago: float = 15,
) -> None:
    """Leave ``post`` as a worker that died mid-call does: claimed, its attempt open, and (if
    ``sent``) published at the network. The claim is dated ``minutes_ago``."""
    with service_session() as s:
        s.execute(
            Post.__table__.update()
            .where(Post.id == post.id)
            .values(status="queued", queued_at=utcnow())
        )
    with service_session() as s:
        row, owner = s.get(Post, post.id), s.get(Integration, integration.id)
        assert row is not None
        assert owner is not None
        assert claim(s, row, owner, task_id="doomed") is not None
        if sent:
            provider = provider_for(owner.provider, settings)
            provider.publish(draft_of(row), account_of(owner), open_tokens(owner, keys))
    then = utcnow() - timedelta(minutes=minutes_ago)
    with service_session() as s:
        s.execute(
            Post.__table__.update().where(Post.id == post.id).values(publishing_started_at=then)
        )
        s.execute(
            PublishAttempt.__table__.update()
            .where(PublishAttempt.post_id == post.id)
            .values(started_at=then)
        )


def busy_account(sandbox: SandboxClient, network: str, integration: Integration) -> None:
    """The account posts ``NEWER`` times after the attempt (its owner, another app)."""
    extra = LOOKUP_NETWORKS[network].get("settings", {})
    texts = [f"newer post {n} on {network}" for n in range(NEWER)]
    sandbox.seed_posts(network, integration.external_account_id, texts, **extra)


def swept(settings: Settings, keys: KeyRing, post: Post) -> Post:
    with service_session() as s:
        resolved = resolve_dead_workers(s, settings, keys)
    assert sum(resolved.values()) == 1, resolved
    stored: Post = fresh(Post, post.id)
    return stored


@pytest.mark.parametrize("network", sorted(LOOKUP_NETWORKS))
def test_a_post_sent_before_the_worker_died_is_found_behind_200_newer_posts(
    network: str,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect(network, **LOOKUP_NETWORKS[network])
    post = new_post(integration, content=f"the post {network} took before the worker died")
    worker_died(integration, post, pub_settings, keys, sent=True)
    busy_account(sandbox, network, integration)

    stored = swept(pub_settings, keys, post)

    assert stored.status is PostStatus.PUBLISHED, stored.last_error_message
    (remote,) = [p for p in sandbox.posts(network) if p["text"] == post.content]
    assert stored.external_id == remote["id"]
    assert sends(sandbox, network) == 1


@pytest.mark.parametrize("network", sorted(set(LOOKUP_NETWORKS) - {"bluesky"}))
def test_absence_that_the_page_budget_cannot_prove_goes_to_review_not_to_a_second_send(
    network: str,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect(network, **LOOKUP_NETWORKS[network])
    post = new_post(integration, content=f"never reached {network}")
    worker_died(integration, post, pub_settings, keys, sent=False)
    busy_account(sandbox, network, integration)
    one_page = pub_settings.model_copy(update={"reconcile_max_pages": 1})

    stored = swept(one_page, keys, post)

    assert stored.status is PostStatus.NEEDS_REVIEW
    assert "page" in (stored.last_error_message or "")
    lookups = [e for e in sandbox.requests(network) if LOOKUP_PATH[network] in e["path"]]
    assert len([e for e in lookups if e["method"] == "GET"]) == 1  # the budget held
    assert sends(sandbox, network) == 0


def test_absence_proven_by_the_record_key_is_sent_again_once(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("bluesky")
    post = new_post(integration, content="never reached bluesky")
    worker_died(integration, post, pub_settings, keys, sent=False)
    busy_account(sandbox, "bluesky", integration)

    stored = swept(pub_settings.model_copy(update={"reconcile_max_pages": 1}), keys, post)

    assert stored.status is PostStatus.RETRYING
    assert "record key" in (stored.last_error_message or "")
    assert sends(sandbox, "bluesky") == 0


@pytest.mark.parametrize("network", sorted(LOOKUP_NETWORKS))
def test_a_failed_lookup_goes_to_review_and_never_to_a_second_send(
    network: str,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect(network, **LOOKUP_NETWORKS[network])
    post = new_post(integration, content=f"sent to {network}, then the lookup failed")
    worker_died(integration, post, pub_settings, keys, sent=True)
    sandbox.inject(network, "error", status=500, method="GET", path=LOOKUP_PATH[network])
    # A lookup the network did not answer is asked again by later sweeps, up to the bound;
    # with a bound of one, this sweep is the last.
    last_chance = pub_settings.model_copy(update={"sweep_max_resolve_attempts": 1})

    stored = swept(last_chance, keys, post)

    assert stored.status is PostStatus.NEEDS_REVIEW
    assert "lookup" in (stored.last_error_message or "")
    assert sends(sandbox, network) == 1
