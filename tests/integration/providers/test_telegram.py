"""Telegram adapter against the sandbox over real HTTP: publish, validation, every error class,
no refresh, no lookup, and a bot token that never reaches a log, an error or the journal."""

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
    Account,
    AmbiguousOutcome,
    ContentInvalid,
    Media,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
    Unknown,
)
from herald.providers.telegram import TelegramProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings


@pytest.fixture
def telegram(sandbox_settings: Settings) -> Iterator[TelegramProvider]:
    provider = TelegramProvider(sandbox_settings)
    yield provider
    provider.close()


@pytest.fixture
def bot(sandbox: SandboxClient) -> tuple[dict[str, Any], TokenSet]:
    seed = sandbox.create_account(
        "telegram",
        handle="herald_bot",
        settings={
            "chats": [
                {"id": -1001111, "type": "channel", "username": "news"},
                {"id": -1002222333, "type": "supergroup", "title": "Private"},
                {"id": 42, "type": "private"},
            ],
            "blocked": [42],
            "migrated": {"-555": -1009999},
        },
    )
    return seed, TokenSet(seed["access_token"])


def draft(text: str = "hello from herald", **settings: Any) -> PostDraft:
    return PostDraft(text=text, idempotency_key="k-1", settings=settings)


def test_publish_sends_one_message_with_its_public_link(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet], sandbox: SandboxClient
) -> None:
    _, tokens = bot
    result = telegram.publish(draft(), Account("@news"), tokens)
    assert [p["id"] for p in sandbox.posts("telegram")] == [result.external_id]
    assert result.url == f"https://t.me/news/{result.external_id}"

    private = telegram.publish(draft("second"), Account("-1002222333"), tokens)
    assert private.url == f"https://t.me/c/2222333/{private.external_id}"


def test_length_is_counted_in_utf16_units_before_any_call(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet], sandbox: SandboxClient
) -> None:
    _, tokens = bot
    telegram.validate(draft("a" * 4096), Account("@news"))
    # 2,048 emoji are 2,048 characters to Python but 4,096 UTF-16 units: one more is too many.
    telegram.validate(draft("\U0001f600" * 2048), Account("@news"))
    with pytest.raises(ContentInvalid) as info:
        telegram.publish(draft("\U0001f600" * 2049), Account("@news"), tokens)
    assert info.value.rule == "telegram.max_length"
    media = (Media("https://cdn.example/p.jpg"),)
    with pytest.raises(ContentInvalid) as caption:
        telegram.publish(PostDraft("c" * 1025, "k", media=media), Account("@news"), tokens)
    assert caption.value.rule == "telegram.max_caption_length"
    with pytest.raises(ContentInvalid) as mode:
        telegram.publish(draft(parse_mode="Markdown"), Account("@news"), tokens)
    assert mode.value.rule == "telegram.parse_mode"
    assert sandbox.requests("telegram") == []


def test_the_networks_own_refusals_are_permanent(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet], sandbox: SandboxClient
) -> None:
    _, tokens = bot
    sandbox.set_options("telegram", max_text_length=10)
    with pytest.raises(PermanentError, match="message is too long"):
        telegram.publish(draft("x" * 11), Account("@news"), tokens)
    with pytest.raises(PermanentError, match="chat not found"):
        telegram.publish(draft(), Account("@nowhere"), tokens)
    with pytest.raises(PermanentError, match="blocked"):
        telegram.publish(draft(), Account("42"), tokens)
    with pytest.raises(PermanentError, match="-1009999"):
        telegram.publish(draft(), Account("-555"), tokens)
    assert sandbox.posts("telegram") == []


def test_rate_limit_reads_retry_after_from_the_body(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet], sandbox: SandboxClient
) -> None:
    _, tokens = bot
    sandbox.set_rate_limit("telegram", limit=1, window_s=7)
    telegram.publish(draft(), Account("@news"), tokens)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        telegram.publish(draft("again"), Account("@news"), tokens)
    assert before + timedelta(seconds=6) <= info.value.reset_at <= before + timedelta(seconds=9)
    assert len(sandbox.posts("telegram")) == 1


def test_a_refused_bot_token_needs_a_reconnect_and_never_leaks(
    telegram: TelegramProvider,
    bot: tuple[dict[str, Any], TokenSet],
    sandbox: SandboxClient,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "999999:not-a-real-token-SECRET"
    with pytest.raises(ReauthRequired) as info:
        telegram.publish(draft(), Account("@news"), TokenSet(secret))
    assert secret not in str(info.value)
    out, err = capfd.readouterr()
    assert secret not in out + err
    assert all(secret not in r["path"] for r in sandbox.requests("telegram"))
    assert all("/bot***/" in r["path"] for r in sandbox.requests("telegram"))


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "error", "status": 502}, AmbiguousOutcome),
        ({"kind": "error", "status": 503}, TransientError),
        (
            {"kind": "error", "status": 403, "message": "bot is not a member of the channel chat"},
            PermanentError,
        ),
        ({"kind": "rate_limit"}, RateLimited),
        ({"kind": "drop"}, AmbiguousOutcome),
        ({"kind": "timeout", "ms": 1500}, AmbiguousOutcome),
    ],
)
def test_injected_faults_map_to_one_error_class(
    telegram: TelegramProvider,
    bot: tuple[dict[str, Any], TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    expected: type[ProviderError],
) -> None:
    _, tokens = bot
    sandbox.inject("telegram", times=1, path="sendMessage", **fault)
    with pytest.raises(ProviderError) as info:
        telegram.publish(draft(), Account("@news"), tokens)
    assert type(info.value) is expected
    assert len(sandbox.requests("telegram")) == 1  # a write is never repeated blindly


def test_applied_then_lost_is_ambiguous_and_cannot_be_looked_up(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet], sandbox: SandboxClient
) -> None:
    _, tokens = bot
    sandbox.inject("telegram", "drop", applied=True, times=1, path="sendMessage")
    with pytest.raises(AmbiguousOutcome):
        telegram.publish(draft(), Account("@news"), tokens)
    assert len(sandbox.posts("telegram")) == 1
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert isinstance(telegram.find_post(draft(), Account("@news"), tokens, since), Unknown)


def test_refresh_is_impossible_and_says_why(
    telegram: TelegramProvider, bot: tuple[dict[str, Any], TokenSet]
) -> None:
    _, tokens = bot
    assert telegram.refreshes_tokens is False
    with pytest.raises(ReauthRequired, match="BotFather"):
        telegram.refresh(Account("@news"), tokens)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class_and_never_posts_twice(
    telegram: TelegramProvider,
    bot: tuple[dict[str, Any], TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    _, tokens = bot
    sandbox.set_rate_limit("telegram", limit=10_000, window_s=60)
    sandbox.clear_faults()
    sandbox.inject("telegram", "error", status=status, applied=applied, times=1, path="sendMessage")
    text = f"property {status} {applied} {uuid.uuid4()}"
    with pytest.raises(ProviderError) as info:
        telegram.publish(draft(text), Account("@news"), tokens)
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
    assert len([p for p in sandbox.posts("telegram") if p["text"] == text]) == (1 if applied else 0)
