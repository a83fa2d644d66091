"""Reddit: a media-asset lease, the storage form upload, an image or video submission, a
gallery through submit_gallery_post; limits; a retry reusing the assets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herald.providers.base import (
    Account,
    ContentInvalid,
    Media,
    MemoryLedger,
    PermanentError,
    TokenSet,
    TransientError,
)
from herald.providers.reddit import RedditProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish


@pytest.fixture
def reddit(media_settings: Settings) -> Iterator[RedditProvider]:
    provider = RedditProvider(media_settings, client_id="herald", client_secret="s")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("reddit", account_id="alice", handle="alice")
    account = Account("alice", handle="alice", settings={"subreddit": "herald_test"})
    return account, TokenSet(seed["access_token"])


def test_an_image_post_and_a_video_post(
    reddit: RedditProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    image = publish(
        reddit, account, tokens, media_settings, Media(media_host.image("jpg")), title="A picture"
    )
    video = publish(
        reddit, account, tokens, media_settings, Media(media_host.video(), "video"), title="A clip"
    )
    uploads = sandbox.uploads("reddit")
    assert [(u["kind"], u["attached_to"]) for u in uploads] == [
        ("image", [image.external_id]),
        ("video", [video.external_id]),
    ]


def test_a_gallery_with_captions_and_a_retry_reusing_its_assets(
    reddit: RedditProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    ledger = MemoryLedger()
    items = [Media(media_host.image(tag=str(n)), alt_text=f"caption {n}") for n in range(3)]
    sandbox.inject("reddit", "error", status=503, path="submit_gallery_post", times=1)
    with pytest.raises(TransientError):
        publish(reddit, account, tokens, media_settings, *items, ledger=ledger, title="Gallery")
    result = publish(
        reddit, account, tokens, media_settings, *items, ledger=ledger, title="Gallery"
    )
    uploads = sandbox.uploads("reddit")
    assert [u["alt"] for u in uploads] == ["caption 0", "caption 1", "caption 2"]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)


def test_limits(
    reddit: RedditProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="a gallery holds images only"):
        publish(
            reddit,
            account,
            tokens,
            media_settings,
            Media(media_host.image()),
            Media(media_host.video(), "video"),
            title="t",
        )
    with pytest.raises(ContentInvalid, match="the limit is 180"):
        publish(
            reddit,
            account,
            tokens,
            media_settings,
            Media(media_host.image(), alt_text="c" * 181),
            title="t",
        )
    sandbox.set_options("reddit", image_max_bytes=100)
    with pytest.raises(PermanentError, match="exceeds the maximum"):
        publish(reddit, account, tokens, media_settings, Media(media_host.image()), title="t")
    assert sandbox.posts("reddit") == []
