"""Mastodon adapter against the sandbox: idempotency key, instance limits, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.providers.base import (
    ERROR_CLASSES,
    Absent,
    Account,
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
from herald.providers.mastodon import MastodonProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings


@pytest.fixture
def masto(sandbox_settings: Settings) -> Iterator[MastodonProvider]:
    provider = MastodonProvider(sandbox_settings, client_id="herald-app", client_secret="s3cr3t")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("mastodon", handle="bob")
    return Account(external_id=seed["account_id"], handle="bob"), TokenSet(seed["access_token"])


def draft(text: str = "toot from herald", key: str = "key-1") -> PostDraft:
    return PostDraft(text=text, idempotency_key=key)


def test_publish_sends_the_idempotency_key_and_returns_the_status_url(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    result = masto.publish(draft(), account, tokens)
    again = masto.publish(draft(), account, tokens)  # a retry of the same post
    assert again.external_id == result.external_id
    assert result.url == f"https://mastodon.sandbox/@bob/{result.external_id}"
    assert len(sandbox.posts("mastodon")) == 1


def test_lost_answer_is_asked_again_in_call_without_a_duplicate(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject("mastodon", "drop", applied=True, times=1, path="/api/v1/statuses")
    result = masto.publish(draft(), account, tokens)
    posts = sandbox.posts("mastodon")
    assert [p["id"] for p in posts] == [result.external_id]
    statuses = [r for r in sandbox.requests("mastodon") if r["path"] == "/api/v1/statuses"]
    assert len(statuses) == 2


def test_limits_come_from_the_instance_and_urls_count_23(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_options("mastodon", max_characters=100)
    masto.validate(draft("a" * 70 + " https://example.com/" + "x" * 100), account)
    with pytest.raises(ContentInvalid) as info:
        masto.publish(draft("a" * 101), account, tokens)
    assert info.value.rule == "mastodon.max_characters"
    instance_reads = [r for r in sandbox.requests("mastodon") if r["path"] == "/api/v2/instance"]
    assert len(instance_reads) == 1  # cached
    assert sandbox.posts("mastodon") == []


def test_the_limit_counts_what_mastodon_counts_graphemes_and_the_content_warning(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    """300 family emoji are 300 characters to Mastodon (2,100 code points: refused before);
    a content warning counts with the text."""
    account, tokens = seeded
    sandbox.set_options("mastodon", max_characters=500)
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
    masto.publish(draft(family * 300), account, tokens)
    warned = PostDraft(text="a" * 450, idempotency_key="k-cw", settings={"spoiler_text": "b" * 60})
    with pytest.raises(ContentInvalid) as info:
        masto.publish(warned, account, tokens)
    assert info.value.rule == "mastodon.max_characters"
    assert len(sandbox.posts("mastodon")) == 1


def test_refused_token_needs_reconnecting(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, _ = seeded
    with pytest.raises(ReauthRequired):
        masto.publish(draft(), account, TokenSet("not-a-token"))
    with pytest.raises(ReauthRequired):
        masto.refresh(account, TokenSet("whatever"))


def test_rate_limit_reset_is_read_from_iso_8601(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    masto.limits(account)
    sandbox.set_rate_limit("mastodon", limit=1, window_s=300)
    masto.publish(draft("one", "k1"), account, tokens)
    with pytest.raises(RateLimited) as info:
        masto.publish(draft("two", "k2"), account, tokens)
    expected = datetime.now(UTC) + timedelta(seconds=300)
    assert abs((info.value.reset_at - expected).total_seconds()) < 5


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "error", "status": 500}, TransientError),
        ({"kind": "error", "status": 422, "message": "Validation failed"}, PermanentError),
        ({"kind": "error", "status": 403}, PermanentError),
        ({"kind": "rate_limit"}, RateLimited),
    ],
)
def test_injected_faults_map_to_one_error_class(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    error: type[Exception],
) -> None:
    account, tokens = seeded
    masto.limits(account)
    sandbox.inject("mastodon", path="/api/v1/statuses", **fault)
    with pytest.raises(error) as info:
        masto.publish(draft(), account, tokens)
    assert type(info.value) is error
    assert sandbox.posts("mastodon") == []


def test_reconcile_finds_the_status_by_its_text(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, tokens = seeded
    since = datetime.now(UTC) - timedelta(seconds=1)
    text = "Tom & Jerry <3\nsecond line"
    result = masto.publish(draft(text), account, tokens)
    found = masto.find_post(draft(text), account, tokens, since)
    assert isinstance(found, Found)
    assert found.post.external_id == result.external_id
    assert isinstance(masto.find_post(draft("other"), account, tokens, since), Absent)
    metrics = masto.fetch_metrics(result.external_id, account, tokens)
    assert (metrics.likes, metrics.reposts, metrics.impressions) == (3, 1, None)


def test_authorize_with_pkce_then_exchange(
    masto: MastodonProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, _ = seeded
    request = masto.authorize("https://app.example/cb", "st")
    assert parse_qs(urlsplit(request.url).query)["code_challenge_method"] == ["S256"]
    location = httpx.get(request.url).headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens, connected = masto.exchange_code(code, "https://app.example/cb", request.code_verifier)
    assert connected.external_id == account.external_id
    assert tokens.refresh_token is None
    with pytest.raises(ReauthRequired):
        masto.exchange_code(code, "https://app.example/cb", request.code_verifier)  # spent


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(status=st.integers(min_value=400, max_value=499), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject(
        "mastodon", "error", status=status, applied=applied, times=1, path="/api/v1/statuses"
    )
    with pytest.raises(ProviderError) as info:
        masto.publish(
            draft(f"property {status} {applied} {uuid.uuid4()}", key=str(uuid.uuid4())),
            account,
            tokens,
        )
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
