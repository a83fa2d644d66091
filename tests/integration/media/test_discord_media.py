"""Discord: attachments as multipart (payload_json + files[n]) with alt text as description,
by webhook and by bot; the size limit; a retry of a bot message is one message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herald.providers.base import Account, ContentInvalid, Media, PermanentError, TokenSet
from herald.providers.discord import DiscordProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish


@pytest.fixture
def discord(media_settings: Settings) -> Iterator[DiscordProvider]:
    provider = DiscordProvider(media_settings, client_id="herald-test", client_secret="s3")
    yield provider
    provider.close()


@pytest.fixture
def webhook(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    settings = {"channel_id": "5001", "guild_id": "9001"}
    seed = sandbox.create_account("discord", handle="herald-hook", settings=settings)
    return Account(seed["account_id"], settings=settings), TokenSet(seed["access_token"])


def test_attachments_by_webhook_with_descriptions(
    discord: DiscordProvider,
    webhook: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = webhook
    items = [
        Media(media_host.image(tag="1"), alt_text="a chart"),
        Media(media_host.image("gif", tag="2"), "gif"),
        Media(media_host.video(), "video", alt_text="a clip"),
    ]
    result = publish(discord, account, tokens, media_settings, *items, text="")
    uploads = sandbox.uploads("discord")
    assert [(u["kind"], u["alt"]) for u in uploads] == [
        ("image", "a chart"),
        ("image", None),
        ("video", "a clip"),
    ]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)


def test_a_bot_message_retried_with_its_nonce_is_one_message(
    discord: DiscordProvider,
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    seed = sandbox.create_account(
        "discord", handle="herald-bot", settings={"mode": "bot", "channels": ["5002"]}
    )
    account = Account("5002", settings={"mode": "bot", "guild_id": "9001"})
    tokens = TokenSet(seed["access_token"])
    image = Media(media_host.image())
    first = publish(discord, account, tokens, media_settings, image)
    again = publish(discord, account, tokens, media_settings, image)
    assert first.external_id == again.external_id
    assert len(sandbox.posts("discord")) == 1


def test_limits(
    discord: DiscordProvider,
    webhook: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = webhook
    with pytest.raises(ContentInvalid, match="at most 10 attachments; got 11"):
        publish(discord, account, tokens, media_settings, *[Media(media_host.image())] * 11)
    with pytest.raises(ContentInvalid, match="the limit is 1024"):
        publish(
            discord, account, tokens, media_settings, Media(media_host.image(), alt_text="d" * 1025)
        )
    sandbox.set_options("discord", attachment_max_bytes=300)
    with pytest.raises(PermanentError, match="Request entity too large"):
        publish(discord, account, tokens, media_settings, Media(media_host.image()))
    assert sandbox.posts("discord") == []
