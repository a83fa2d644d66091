"""Discord adapter against the sandbox over real HTTP: webhook and bot publishing, nonce
de-duplication, errors, OAuth refresh-token rotation, and reconciliation lookups."""

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
    ContentInvalid,
    Found,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
    Unknown,
)
from herald.providers.discord import DiscordProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings

SINCE = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def discord(sandbox_settings: Settings) -> Iterator[DiscordProvider]:
    provider = DiscordProvider(sandbox_settings, client_id="herald-test", client_secret="s3")
    yield provider
    provider.close()


@pytest.fixture
def webhook(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    settings = {"channel_id": "5001", "guild_id": "9001"}
    seed = sandbox.create_account("discord", handle="herald-hook", settings=settings)
    account = Account(seed["account_id"], settings=settings)
    return account, TokenSet(seed["access_token"], seed["refresh_token"])


@pytest.fixture
def bot(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account(
        "discord", handle="herald-bot", settings={"mode": "bot", "channels": ["5002"]}
    )
    account = Account("5002", settings={"mode": "bot", "guild_id": "9001"})
    return account, TokenSet(seed["access_token"])


def draft(text: str = "hello from herald", key: str = "post-1", **settings: Any) -> PostDraft:
    return PostDraft(text=text, idempotency_key=key, settings=settings)


def test_webhook_publish_waits_for_the_message_and_hides_the_token(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = webhook
    result = discord.publish(draft(), account, tokens)
    assert [p["id"] for p in sandbox.posts("discord")] == [result.external_id]
    assert result.url == f"https://discord.com/channels/9001/5001/{result.external_id}"
    (request,) = sandbox.requests("discord")
    assert tokens.access_token not in request["path"]
    assert request["path"].endswith("/***")


def test_bot_publish_with_the_same_key_is_deduplicated_by_nonce(
    discord: DiscordProvider, bot: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = bot
    first = discord.publish(draft(), account, tokens)
    again = discord.publish(draft(), account, tokens)
    other = discord.publish(draft(key="post-2"), account, tokens)
    assert first.external_id == again.external_id != other.external_id
    assert len(sandbox.posts("discord")) == 2


def test_bot_answer_lost_after_applying_is_asked_again_safely(
    discord: DiscordProvider, bot: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = bot
    sandbox.inject("discord", "drop", applied=True, times=1, path="/messages", method="POST")
    result = discord.publish(draft(), account, tokens)
    (stored,) = sandbox.posts("discord")
    assert stored["id"] == result.external_id
    assert len(sandbox.requests("discord")) == 2


def test_webhook_answer_lost_is_ambiguous_never_resent(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = webhook
    sandbox.inject("discord", "drop", applied=True, times=1, path="/webhooks/")
    with pytest.raises(AmbiguousOutcome):
        discord.publish(draft(), account, tokens)
    assert len(sandbox.requests("discord")) == 1
    assert len(sandbox.posts("discord")) == 1


def test_overlong_content_is_refused_locally_and_by_the_network(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = webhook
    with pytest.raises(ContentInvalid) as info:
        discord.publish(draft("x" * 2001), account, tokens)
    assert info.value.rule == "discord.max_length"
    assert sandbox.requests("discord") == []
    sandbox.set_options("discord", max_content_length=10)
    with pytest.raises(PermanentError) as network:
        discord.publish(draft("x" * 11), account, tokens)
    assert network.value.provider_code == "50035"
    assert "content: Must be 10 or fewer in length." in network.value.message


def test_rate_limit_reads_retry_after_seconds(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = webhook
    sandbox.set_rate_limit("discord", limit=1, window_s=30)
    discord.publish(draft(), account, tokens)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        discord.publish(draft("again"), account, tokens)
    assert before + timedelta(seconds=29) <= info.value.reset_at <= before + timedelta(seconds=32)


def test_a_wrong_webhook_token_or_a_deleted_webhook_needs_a_reconnect(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet]
) -> None:
    account, _ = webhook
    with pytest.raises(ReauthRequired) as wrong:
        discord.publish(draft(), account, TokenSet("not-the-webhook-token"))
    assert wrong.value.provider_code == "50027"
    assert "not-the-webhook-token" not in str(wrong.value)
    gone = Account("424242", settings=dict(account.settings))
    with pytest.raises(ReauthRequired) as unknown:
        discord.publish(draft(), gone, TokenSet("whatever"))
    assert unknown.value.provider_code == "10015"


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "error", "status": 500}, AmbiguousOutcome),
        ({"kind": "error", "status": 503}, TransientError),
        (
            {"kind": "error", "status": 403, "code": "50013", "message": "Missing Permissions"},
            PermanentError,
        ),
        ({"kind": "rate_limit"}, RateLimited),
        ({"kind": "timeout", "ms": 1500}, AmbiguousOutcome),
    ],
)
def test_webhook_faults_map_to_one_error_class(
    discord: DiscordProvider,
    webhook: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    expected: type[ProviderError],
) -> None:
    account, tokens = webhook
    sandbox.inject("discord", times=1, path="/webhooks/", **fault)
    with pytest.raises(ProviderError) as info:
        discord.publish(draft(), account, tokens)
    assert type(info.value) is expected


def test_bot_5xx_is_retried_inside_the_call_because_the_nonce_makes_it_safe(
    discord: DiscordProvider, bot: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = bot
    sandbox.inject("discord", "error", status=500, times=1, path="/messages", applied=True)
    discord.publish(draft(), account, tokens)
    assert len(sandbox.posts("discord")) == 1


def test_refresh_rotates_the_grant_and_reuse_is_refused(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = webhook
    fresh = discord.refresh(account, tokens)
    assert fresh.refresh_token
    assert fresh.refresh_token != tokens.refresh_token
    assert fresh.access_token == tokens.access_token  # the webhook token is kept
    assert fresh.expires_at is not None
    assert fresh.expires_at > datetime.now(UTC) + timedelta(days=6)
    with pytest.raises(ReauthRequired):
        discord.refresh(account, tokens)  # the spent refresh token, replayed
    with pytest.raises(ReauthRequired):
        discord.refresh(account, fresh)  # reuse revoked the whole family


def test_bot_tokens_cannot_be_refreshed(
    discord: DiscordProvider, bot: tuple[Account, TokenSet]
) -> None:
    account, tokens = bot
    with pytest.raises(ReauthRequired, match="developer portal"):
        discord.refresh(account, tokens)


def test_find_post_reads_bot_history_and_checks_webhook_candidates(
    discord: DiscordProvider,
    bot: tuple[Account, TokenSet],
    webhook: tuple[Account, TokenSet],
) -> None:
    bot_account, bot_tokens = bot
    published = discord.publish(draft("from the bot"), bot_account, bot_tokens)
    found = discord.find_post(draft("from the bot"), bot_account, bot_tokens, SINCE)
    assert isinstance(found, Found)
    assert found.post.external_id == published.external_id
    missing = discord.find_post(draft("never sent", key="x"), bot_account, bot_tokens, SINCE)
    assert isinstance(missing, Absent)

    hook_account, hook_tokens = webhook
    sent = discord.publish(draft("via hook"), hook_account, hook_tokens)
    candidate = draft("via hook", message_id=sent.external_id)
    hit = discord.find_post(candidate, hook_account, hook_tokens, SINCE)
    assert isinstance(hit, Found)
    assert hit.post.text == "via hook"
    # A webhook cannot list its messages: without the message, absence is never proven.
    unknown = discord.find_post(draft("via hook"), hook_account, hook_tokens, SINCE)
    assert isinstance(unknown, Unknown)
    assert "cannot list" in unknown.reason
    gone = draft("via hook", message_id="123")
    assert isinstance(discord.find_post(gone, hook_account, hook_tokens, SINCE), Unknown)


def test_metrics_sum_reactions(discord: DiscordProvider, webhook: tuple[Account, TokenSet]) -> None:
    account, tokens = webhook
    sent = discord.publish(draft(), account, tokens)
    metrics = discord.fetch_metrics(sent.external_id, account, tokens)
    assert metrics.likes == 0
    assert metrics.impressions is None


def test_exchange_code_returns_the_webhook_connection(
    discord: DiscordProvider, webhook: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, _ = webhook
    request = discord.authorize("https://app.example/cb", "state-1")
    assert "scope=webhook.incoming" in request.url
    code = sandbox.authorization_code(
        "discord",
        account.external_id,
        redirect_uri="https://app.example/cb",
        scopes=["webhook.incoming"],
    )
    tokens, connected = discord.exchange_code(code, "https://app.example/cb", None)
    assert connected.external_id == account.external_id
    assert connected.settings["channel_id"] == "5001"
    assert tokens.refresh_token
    result = discord.publish(draft(), connected, tokens)
    assert result.url == f"https://discord.com/channels/9001/5001/{result.external_id}"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class_and_never_posts_twice(
    discord: DiscordProvider,
    webhook: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = webhook
    sandbox.set_rate_limit("discord", limit=10_000, window_s=60)
    sandbox.clear_faults()
    sandbox.inject("discord", "error", status=status, applied=applied, times=1, path="/webhooks/")
    text = f"property {status} {applied} {uuid.uuid4()}"
    with pytest.raises(ProviderError) as info:
        discord.publish(draft(text, key=text), account, tokens)
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
    assert len([p for p in sandbox.posts("discord") if p["text"] == text]) == (1 if applied else 0)
