"""Bluesky adapter against the sandbox: sessions, rkey idempotency, facets, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.providers.base import (
    ERROR_CLASSES,
    Absent,
    Account,
    AuthExpired,
    ContentInvalid,
    Found,
    PermanentError,
    PostDraft,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
)
from herald.providers.bluesky import BlueskyProvider, tid_for
from herald.sandbox import SandboxClient
from herald.settings import Settings

HANDLE = "carol.bsky.sandbox"


@pytest.fixture
def bsky(sandbox_settings: Settings) -> Iterator[BlueskyProvider]:
    provider = BlueskyProvider(sandbox_settings)
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("bluesky", handle=HANDLE, password="app-pass-1234")
    account = Account(external_id=seed["account_id"], handle=HANDLE)
    return account, TokenSet(seed["access_token"], seed["refresh_token"])


def draft(text: str = "skeet from herald", key: str = "post-1") -> PostDraft:
    return PostDraft(text=text, idempotency_key=key)


def test_login_with_app_password(bsky: BlueskyProvider, seeded: tuple[Account, TokenSet]) -> None:
    account, _ = seeded
    tokens, connected = bsky.login(HANDLE, "app-pass-1234")
    assert connected.external_id == account.external_id
    assert tokens.refresh_token
    assert tokens.expires_at
    with pytest.raises(ReauthRequired) as info:
        bsky.login(HANDLE, "wrong")
    assert "app-pass" not in str(info.value)
    assert "wrong" not in str(info.value)


def test_publish_writes_at_the_key_derived_rkey_with_byte_offset_facets(
    bsky: BlueskyProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    text = "héllo 👋🏽 see https://example.com/ä now"
    result = bsky.publish(draft(text), account, tokens)
    rkey = tid_for("post-1")
    assert result.external_id == f"at://{account.external_id}/app.bsky.feed.post/{rkey}"
    assert result.url == f"https://bsky.app/profile/{HANDLE}/post/{rkey}"
    [post] = sandbox.posts("bluesky")
    facet = post["data"]["record"]["facets"][0]
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    assert text.encode()[start:end].decode() == "https://example.com/ä"


def test_a_repeated_publish_returns_the_same_post_without_a_second_write(
    bsky: BlueskyProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    first = bsky.publish(draft(), account, tokens)
    second = bsky.publish(draft(), account, tokens)
    assert second.external_id == first.external_id
    assert len(sandbox.posts("bluesky")) == 1


@pytest.mark.parametrize("conflict_status", [400, 500])
def test_applied_then_dropped_publish_recovers_inside_the_call(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    conflict_status: int,
) -> None:
    account, tokens = seeded
    sandbox.set_options("bluesky", rkey_conflict_status=conflict_status)
    sandbox.inject("bluesky", "drop", applied=True, times=1, path="createRecord")
    result = bsky.publish(draft(), account, tokens)
    [post] = sandbox.posts("bluesky")
    assert post["id"] == result.external_id


def test_limits_count_graphemes(bsky: BlueskyProvider, seeded: tuple[Account, TokenSet]) -> None:
    account, tokens = seeded
    bsky.validate(draft("e\u0301" * 300), account)  # 600 code points, 300 graphemes
    with pytest.raises(ContentInvalid) as info:
        bsky.publish(draft("a" * 301), account, tokens)
    assert info.value.rule == "bluesky.max_graphemes"
    bsky.validate(draft("👨‍👩‍👧‍👦" * 120), account)  # 25 bytes each: exactly 3,000
    with pytest.raises(ContentInvalid) as info:
        bsky.validate(draft("👨‍👩‍👧‍👦" * 121), account)
    assert info.value.rule == "bluesky.max_bytes"


def test_expired_access_token_is_a_400_expired_token(
    bsky: BlueskyProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("bluesky", account.external_id)
    with pytest.raises(AuthExpired) as info:
        bsky.publish(draft(), account, tokens)
    assert info.value.http_status == 400
    assert info.value.provider_code == "ExpiredToken"


def test_refresh_rotates_and_a_spent_token_dies_after_the_grace(
    bsky: BlueskyProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    fresh = bsky.refresh(account, tokens)
    assert fresh.refresh_token != tokens.refresh_token
    bsky.publish(draft(), account, fresh)
    bsky.refresh(account, tokens)  # within the 2 h grace: still accepted
    sandbox.advance_clock(7201)
    with pytest.raises(ReauthRequired) as info:
        bsky.refresh(account, tokens)
    assert info.value.provider_code == "ExpiredToken"


def test_reconcile_reads_the_record_at_the_derived_key(
    bsky: BlueskyProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, tokens = seeded
    since = datetime.now(UTC)
    assert isinstance(bsky.find_post(draft(), account, tokens, since), Absent)
    result = bsky.publish(draft(), account, tokens)
    found = bsky.find_post(draft(), account, tokens, since)
    assert isinstance(found, Found)
    assert found.post.external_id == result.external_id
    metrics = bsky.fetch_metrics(result.external_id, account, tokens)
    assert (metrics.likes, metrics.reposts) == (4, 2)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "error", "status": 500}, TransientError),
        ({"kind": "error", "status": 413}, PermanentError),
        ({"kind": "error", "status": 400, "code": "InvalidToken"}, AuthExpired),
        ({"kind": "rate_limit"}, RateLimited),
    ],
)
def test_injected_faults_map_to_one_error_class(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    error: type[Exception],
) -> None:
    account, tokens = seeded
    sandbox.inject("bluesky", path="createRecord", **fault)
    with pytest.raises(error) as info:
        bsky.publish(draft(), account, tokens)
    assert type(info.value) is error
    assert sandbox.posts("bluesky") == []


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(status=st.integers(min_value=400, max_value=499), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject("bluesky", "error", status=status, applied=applied, times=1, path="createRecord")
    post = draft(f"property {status} {applied} {uuid.uuid4()}", key=str(uuid.uuid4()))
    outcome: ProviderError | PublishResult
    try:
        outcome = bsky.publish(post, account, tokens)
    except ProviderError as error:
        outcome = error
    if isinstance(outcome, ProviderError):
        assert type(outcome) in ERROR_CLASSES
        assert type(outcome) is not ContentInvalid
    else:
        # Only a write that took effect may succeed: the adapter read it back at its rkey.
        assert applied
        assert outcome.external_id in {p["id"] for p in sandbox.posts("bluesky")}
