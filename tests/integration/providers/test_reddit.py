"""Reddit adapter against the sandbox over real HTTP: submit, errors inside a 200, rate limits,
Basic-auth refresh without rotation, and reconciliation from the user's submissions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.providers.base import (
    ERROR_CLASSES,
    Absent,
    Account,
    AmbiguousOutcome,
    AuthExpired,
    ContentInvalid,
    Found,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
)
from herald.providers.reddit import RedditProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings

SINCE = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def reddit(sandbox_settings: Settings) -> Iterator[RedditProvider]:
    provider = RedditProvider(sandbox_settings, client_id="herald-test", client_secret="s3")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("reddit", account_id="alice", handle="alice")
    account = Account("alice", handle="alice", settings={"subreddit": "herald_test"})
    return account, TokenSet(seed["access_token"], seed["refresh_token"])


def draft(text: str = "body text", title: str = "A title", **settings: Any) -> PostDraft:
    return PostDraft(text=text, idempotency_key="k-1", settings={"title": title, **settings})


def test_submit_creates_one_self_post_with_its_url(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    result = reddit.publish(draft(), account, tokens)
    (post,) = sandbox.posts("reddit")
    assert post["id"] == result.external_id
    assert post["data"]["subreddit"] == "herald_test"
    assert result.url == (
        f"https://www.reddit.com/r/herald_test/comments/{result.external_id}/a_title/"
    )


def test_title_and_text_limits_are_checked_before_any_call(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    reddit.validate(draft(title="t" * 300, text="x" * 40_000), account)
    cases = [
        (draft(title="t" * 301), "reddit.max_title_length"),
        (draft(text="x" * 40_001), "reddit.max_length"),
        (PostDraft("", "k", settings={}), "reddit.title_required"),
        (draft(subreddit="no spaces allowed"), "reddit.subreddit"),
    ]
    for post, rule in cases:
        with pytest.raises(ContentInvalid) as info:
            reddit.publish(post, account, tokens)
        assert info.value.rule == rule
    assert sandbox.requests("reddit") == []


def test_errors_inside_a_200_are_permanent_with_reddits_code(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_options("reddit", subreddits=["python"])
    with pytest.raises(PermanentError) as info:
        reddit.publish(draft(), account, tokens)
    assert info.value.provider_code == "SUBREDDIT_NOEXIST"
    assert info.value.http_status == 200
    sandbox.set_options("reddit", subreddits=None, max_title_length=5)
    with pytest.raises(PermanentError) as long_title:
        reddit.publish(draft(title="longer"), account, tokens)
    assert long_title.value.provider_code == "TOO_LONG"
    assert sandbox.posts("reddit") == []


def test_posting_throttle_inside_a_200_is_rate_limited_for_the_minutes_it_names(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_options("reddit", post_interval_s=540)
    reddit.publish(draft(), account, tokens)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        reddit.publish(draft(title="second"), account, tokens)
    assert info.value.provider_code == "RATELIMIT"
    reset = info.value.reset_at
    assert before + timedelta(minutes=9) <= reset <= before + timedelta(minutes=9, seconds=5)
    assert len(sandbox.posts("reddit")) == 1


def test_http_429_reads_x_ratelimit_reset(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_rate_limit("reddit", limit=1, window_s=120)
    reddit.publish(draft(), account, tokens)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        reddit.publish(draft(title="again"), account, tokens)
    assert before + timedelta(seconds=119) <= info.value.reset_at <= before + timedelta(seconds=122)


def test_expired_token_is_auth_expired_and_refresh_does_not_rotate(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("reddit", "alice")
    with pytest.raises(AuthExpired) as info:
        reddit.publish(draft(), account, tokens)
    assert info.value.provider_code == "invalid_token"
    fresh = reddit.refresh(account, tokens)
    assert fresh.access_token != tokens.access_token
    assert fresh.refresh_token == tokens.refresh_token
    again = reddit.refresh(account, tokens)  # the same refresh token keeps working
    assert again.access_token != fresh.access_token
    reddit.publish(draft(), account, again)
    token_calls = [r for r in sandbox.requests("reddit") if r["path"] == "/api/v1/access_token"]
    assert len(token_calls) == 2


def test_a_refused_refresh_token_needs_a_reconnect(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, _ = seeded
    with pytest.raises(ReauthRequired):
        reddit.refresh(account, TokenSet("x", "not-a-refresh-token"))
    with pytest.raises(ReauthRequired):
        reddit.refresh(account, TokenSet("x", None))


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "error", "status": 500}, AmbiguousOutcome),
        ({"kind": "error", "status": 503}, TransientError),
        ({"kind": "error", "status": 403}, PermanentError),
        ({"kind": "error", "status": 403, "code": "insufficient_scope"}, ReauthRequired),
        ({"kind": "rate_limit"}, RateLimited),
        ({"kind": "drop"}, AmbiguousOutcome),
    ],
)
def test_injected_faults_map_to_one_error_class(
    reddit: RedditProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    expected: type[ProviderError],
) -> None:
    account, tokens = seeded
    sandbox.inject("reddit", times=1, path="/api/submit", **fault)
    with pytest.raises(ProviderError) as info:
        reddit.publish(draft(), account, tokens)
    assert type(info.value) is expected
    assert len(sandbox.requests("reddit")) == 1


def test_ambiguous_submit_is_reconciled_from_the_users_submissions(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    reddit.publish(draft(title="an older one"), account, tokens)
    sandbox.inject("reddit", "error", status=502, applied=True, times=1, path="/api/submit")
    with pytest.raises(AmbiguousOutcome):
        reddit.publish(draft(), account, tokens)
    found = reddit.find_post(draft(), account, tokens, SINCE)
    assert isinstance(found, Found)
    (lost,) = [p for p in sandbox.posts("reddit") if p["data"]["title"] == "A title"]
    assert found.post.external_id == lost["id"]
    elsewhere = reddit.find_post(draft(subreddit="elsewhere"), account, tokens, SINCE)
    assert isinstance(elsewhere, Absent)
    never = reddit.find_post(draft(title="never posted"), account, tokens, SINCE)
    assert isinstance(never, Absent)


def test_metrics_come_from_api_info(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, tokens = seeded
    result = reddit.publish(draft(), account, tokens)
    metrics = reddit.fetch_metrics(result.external_id, account, tokens)
    assert metrics.likes == 1
    assert metrics.replies == 0
    with pytest.raises(PermanentError):
        reddit.fetch_metrics("zzzzzz", account, tokens)


def test_exchange_code_returns_tokens_and_the_username(
    reddit: RedditProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    request = reddit.authorize("https://app.example/cb", "st")
    assert "duration=permanent" in request.url
    code = sandbox.authorization_code(
        "reddit",
        "alice",
        redirect_uri="https://app.example/cb",
        scopes=["identity", "submit", "read"],
    )
    tokens, account = reddit.exchange_code(code, "https://app.example/cb", None)
    assert account.external_id == "alice"
    assert tokens.refresh_token
    assert tokens.scopes == ("identity", "submit", "read")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class_and_never_posts_twice(
    reddit: RedditProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject("reddit", "error", status=status, applied=applied, times=1, path="/api/submit")
    text = f"property {status} {applied} {uuid.uuid4()}"
    with pytest.raises(ProviderError) as info:
        reddit.publish(draft(title=text), account, tokens)
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
    assert len([p for p in sandbox.posts("reddit") if p["data"]["title"] == text]) == (
        1 if applied else 0
    )
