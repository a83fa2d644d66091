"""What one refresh records and changes, by outcome: a dead grant confirmed under the lease, a
"dead grant" that was really someone else's newer tokens, a transient failure, a dead
refresh worker's lease; and status writes that never overwrite newer tokens."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from herald.models import Integration, IntegrationStatus, Post, PostStatus, Workspace, utcnow
from herald.providers.base import Account
from herald.publishing.publisher import publish_post
from herald.sandbox import SandboxClient
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.connect import connect_integration, tokens_from
from herald.tokens.refresh import RefreshFailed, RefreshOutcome, refresh_integration
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.tokens.support import (
    outcomes,
    refresh_attempts,
    revoked_tokens,
    set_integration,
    token_calls,
    until,
    wait_for_auth,
)


def refresh(integration: Integration, settings: Settings, keys: KeyRing, **kw: Any) -> Any:
    with service_session() as s:
        return refresh_integration(s, integration.id, settings, keys, **kw)


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``work`` on a thread; the returned function joins it and gives its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised on the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> Any:
        thread.join(timeout=30)
        if "error" in box:
            raise box["error"]
        return box["result"]

    return join


def reconnect(
    sandbox: SandboxClient, integration: Integration, workspace: Workspace, keys: KeyRing
) -> int:
    """The user connects the account again (new tokens); returns the new token version."""
    issued = sandbox.issue_tokens(integration.provider, integration.external_account_id)
    with service_session() as s:
        again = connect_integration(
            s,
            workspace_id=workspace.id,
            provider=integration.provider,
            account=Account(integration.external_account_id, handle=integration.handle),
            tokens=tokens_from(issued),
            keys=keys,
        )
        return again.token_version


def test_invalid_grant_is_confirmed_then_marks_needs_reauth_once_and_the_posts_wait(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    refresh_token = open_tokens(integration, keys).refresh_token
    assert refresh_token
    sandbox.revoke_token(refresh_token)  # the user removed the app
    post = new_post(integration)
    wait_for_auth(post.id)

    outcome = refresh(integration, pub_settings, keys, seen_version=integration.token_version)

    assert (outcome.outcome, outcome.status) == ("invalid_grant", IntegrationStatus.NEEDS_REAUTH)
    after = fresh(Integration, integration.id)
    assert after.status is IntegrationStatus.NEEDS_REAUTH
    assert after.token_version == integration.token_version
    assert after.refresh_failure_count == 1
    assert after.refresh_lease_owner is None
    [attempt] = refresh_attempts(integration.id)
    assert (attempt.outcome, attempt.error_code) == ("invalid_grant", "reauth_required")
    # Its posts wait for the user (they do not fail one by one).
    waiting = fresh(Post, post.id)
    assert (waiting.status, waiting.next_attempt_at) == (PostStatus.RETRYING, None)
    assert waiting.last_error_code == "integration_needs_reauth"
    # Once needs_reauth, nobody tries again.
    assert refresh(integration, pub_settings, keys).outcome == "skipped"
    assert len(token_calls(sandbox, "x")) == 1


def test_a_refresh_on_a_process_without_the_tokens_key_never_cuts_the_connection_off(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """A refresh run where HERALD_TOKEN_KEYS lacks the key the tokens were sealed under (a
    rollout of a new key, half done) says nothing about the grant: it is retried, the
    integration keeps its status, and a process with the key refreshes it."""
    integration = connect("x")
    behind = KeyRing({"old": bytes(32)}, "old")

    with pytest.raises(RefreshFailed, match="lacks"):
        refresh(integration, pub_settings, behind, seen_version=integration.token_version)

    assert fresh(Integration, integration.id).status is IntegrationStatus.ACTIVE
    [attempt] = refresh_attempts(integration.id)
    assert (attempt.outcome, attempt.error_code) == ("transient", "token_key_unknown")
    assert token_calls(sandbox, "x") == []
    assert refresh(integration, pub_settings, keys).outcome == "refreshed"


def test_a_refresh_token_that_cannot_be_opened_is_token_unreadable_without_a_call(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration, other = connect("x"), connect("x")
    # Sealed for another integration: the associated data does not match, so it cannot open.
    set_integration(integration.id, refresh_token_ciphertext=other.refresh_token_ciphertext)
    post = new_post(integration)
    wait_for_auth(post.id)

    outcome = refresh(integration, pub_settings, keys, seen_version=integration.token_version)

    assert (outcome.outcome, outcome.status) == ("token_unreadable", IntegrationStatus.NEEDS_REAUTH)
    assert fresh(Integration, integration.id).status is IntegrationStatus.NEEDS_REAUTH
    [attempt] = refresh_attempts(integration.id)
    assert attempt.outcome == "token_unreadable"
    assert other.refresh_token_ciphertext not in (attempt.error_message or "")
    # Its posts wait for the user, as after invalid_grant (herald.reauth).
    waiting = fresh(Post, post.id)
    assert (waiting.status, waiting.next_attempt_at) == (PostStatus.RETRYING, None)
    assert token_calls(sandbox, "x") == []


def test_reauth_required_for_tokens_replaced_during_the_refresh_uses_the_new_tokens(
    connect: ConnectFn,
    workspace: Workspace,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    sandbox.inject("x", "latency", ms=800, path="oauth2/token")
    sandbox.inject("x", "error", status=400, code="invalid_request", path="oauth2/token", times=1)

    join = in_thread(lambda: refresh(integration, pub_settings, keys))
    until(lambda: token_calls(sandbox, "x"), "the refresh to reach X")
    new_version = reconnect(sandbox, integration, workspace, keys)  # while X thinks
    outcome: RefreshOutcome = join()

    assert outcome.outcome == "lost_race"
    after = fresh(Integration, integration.id)
    assert after.status is IntegrationStatus.ACTIVE
    assert after.token_version == new_version
    assert outcomes(integration.id) == ["lost_race"]


def test_a_refusal_of_tokens_replaced_meanwhile_never_marks_the_integration(
    connect: ConnectFn,
    workspace: Workspace,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    post = new_post(integration)
    with service_session() as s:
        s.execute(update(Post).where(Post.id == post.id).values(status="queued"))
    sandbox.inject("mastodon", "latency", ms=800, method="POST", path="statuses")
    sandbox.inject("mastodon", "error", status=401, method="POST", path="statuses", times=1)

    def publish() -> Any:
        with service_session() as s:
            return publish_post(s, post.id, pub_settings, keys)

    join = in_thread(publish)
    until(
        lambda: [r for r in sandbox.requests("mastodon") if r["method"] == "POST"],
        "the publish to reach Mastodon",
    )
    new_version = reconnect(sandbox, integration, workspace, keys)
    join()

    after = fresh(Integration, integration.id)
    assert after.token_version == new_version
    assert after.status is IntegrationStatus.ACTIVE  # the refusal was of the old tokens


def test_a_transient_failure_never_changes_the_status_and_the_retry_refreshes(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x")
    set_integration(integration.id, status=IntegrationStatus.REFRESH_NEEDED)
    post = new_post(integration)
    wait_for_auth(post.id)
    sandbox.inject("x", "error", status=503, path="oauth2/token", times=1)

    with pytest.raises(RefreshFailed):
        refresh(integration, pub_settings, keys)

    waiting = fresh(Integration, integration.id)
    assert waiting.status is IntegrationStatus.REFRESH_NEEDED
    assert waiting.refresh_failure_count == 1
    # Pending: the posts keep waiting, and the retry may take the lease.
    assert waiting.refresh_lease_owner is None
    assert waiting.refresh_lease_until > utcnow()
    assert fresh(Post, post.id).next_attempt_at > utcnow()
    [attempt] = refresh_attempts(integration.id)
    assert (attempt.outcome, attempt.error_code) == ("transient", "transient")

    assert refresh(integration, pub_settings, keys).outcome == "refreshed"
    after = fresh(Integration, integration.id)
    assert (after.status, after.refresh_failure_count) == (IntegrationStatus.ACTIVE, 0)
    assert after.refresh_lease_until is None
    assert fresh(Post, post.id).next_attempt_at <= utcnow()
    assert fresh(Post, post.id).status is PostStatus.RETRYING  # the dispatcher publishes it
    assert revoked_tokens(sandbox, "x", integration.external_account_id) == []


def test_a_live_lease_keeps_others_off_and_a_dead_workers_lease_expires(
    connect: ConnectFn, sandbox: SandboxClient, pub_settings: Settings, keys: KeyRing
) -> None:
    integration = connect("x")
    set_integration(
        integration.id,
        refresh_lease_owner="worker-that-died",
        refresh_lease_until=utcnow() + timedelta(minutes=1),
    )
    assert refresh(integration, pub_settings, keys).outcome == "lost_race"
    assert token_calls(sandbox, "x") == []

    set_integration(integration.id, refresh_lease_until=utcnow() - timedelta(seconds=1))
    assert refresh(integration, pub_settings, keys).outcome == "refreshed"
    assert len(token_calls(sandbox, "x")) == 1
    assert fresh(Integration, integration.id).refresh_lease_owner is None


def test_a_refresh_of_a_deleted_integration_is_skipped(
    pub_settings: Settings, keys: KeyRing, committed: Any
) -> None:
    with service_session() as s:
        outcome = refresh_integration(s, uuid.uuid4(), pub_settings, keys)
    assert outcome.outcome == "skipped"
