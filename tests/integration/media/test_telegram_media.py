"""Telegram: a photo, a video and a media group sent as multipart uploads with the caption;
the Bot API's size limits; a failed send publishes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herald.providers.base import (
    Account,
    ContentInvalid,
    Media,
    PermanentError,
    TokenSet,
    TransientError,
)
from herald.providers.telegram import TelegramProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish

CHANNEL = Account("@news")


@pytest.fixture
def telegram(media_settings: Settings) -> Iterator[TelegramProvider]:
    provider = TelegramProvider(media_settings)
    yield provider
    provider.close()


@pytest.fixture
def tokens(sandbox: SandboxClient) -> TokenSet:
    seed = sandbox.create_account(
        "telegram",
        handle="herald_bot",
        settings={"chats": [{"id": -1001111, "type": "channel", "username": "news"}]},
    )
    return TokenSet(seed["access_token"])


def test_a_photo_and_a_video_go_out_with_their_captions(
    telegram: TelegramProvider,
    tokens: TokenSet,
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    photo = publish(
        telegram, CHANNEL, tokens, media_settings, Media(media_host.image("jpg")), text="look"
    )
    video = publish(
        telegram, CHANNEL, tokens, media_settings, Media(media_host.video(), "video"), text="watch"
    )
    posts = {p["id"]: p for p in sandbox.posts("telegram")}
    assert (posts[photo.external_id]["text"], posts[photo.external_id]["data"]["method"]) == (
        "look",
        "sendPhoto",
    )
    assert posts[video.external_id]["data"]["method"] == "sendVideo"
    assert [u["kind"] for u in sandbox.uploads("telegram")] == ["image", "video"]


def test_a_media_group_carries_the_caption_on_its_first_item(
    telegram: TelegramProvider,
    tokens: TokenSet,
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    items = [
        Media(media_host.image(tag="1")),
        Media(media_host.image(tag="2")),
        Media(media_host.video(), "video"),
    ]
    result = publish(telegram, CHANNEL, tokens, media_settings, *items, text="album")
    posts = sandbox.posts("telegram")
    assert len(posts) == 3
    first = next(p for p in posts if p["id"] == result.external_id)
    assert first["text"] == "album"
    assert [m["kind"] for m in first["data"]["media"]] == ["image", "image", "video"]


def test_limits_are_named(
    telegram: TelegramProvider,
    tokens: TokenSet,
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    with pytest.raises(ContentInvalid, match="a media group holds 2 to 10 items"):
        publish(telegram, CHANNEL, tokens, media_settings, *[Media(media_host.image())] * 11)
    with pytest.raises(ContentInvalid, match="a media group holds photos and videos"):
        publish(
            telegram,
            CHANNEL,
            tokens,
            media_settings,
            Media(media_host.image()),
            Media(media_host.image("gif"), "gif"),
        )
    sandbox.set_options("telegram", photo_max_bytes=200)
    with pytest.raises(PermanentError, match="Request Entity Too Large"):
        publish(telegram, CHANNEL, tokens, media_settings, Media(media_host.image()))
    sandbox.inject("telegram", "error", status=503, path="sendMediaGroup", times=1)
    with pytest.raises(TransientError):
        publish(
            telegram,
            CHANNEL,
            tokens,
            media_settings,
            Media(media_host.video(tag="a"), "video"),
            Media(media_host.video(tag="b"), "video"),
        )
    assert sandbox.posts("telegram") == []
