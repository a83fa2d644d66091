"""Bluesky: uploadBlob streamed from disk, images embed with alt and aspect ratio, a video
embed, limits, a failed upload, reuse."""

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
from herald.providers.bluesky import BlueskyProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish

HANDLE = "carol.bsky.social"


@pytest.fixture
def bsky(media_settings: Settings) -> Iterator[BlueskyProvider]:
    provider = BlueskyProvider(media_settings)
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("bluesky", handle=HANDLE, password="app-pass-1234")
    return Account(seed["account_id"], handle=HANDLE), TokenSet(seed["access_token"])


def test_images_with_alt_text_and_aspect_ratio(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    items = [
        Media(media_host.image(w=80 + n, h=60, tag=str(n)), alt_text=f"alt {n}") for n in range(3)
    ]
    result = publish(bsky, account, tokens, media_settings, *items)
    uploads = sandbox.uploads("bluesky")
    assert [u["alt"] for u in uploads] == ["alt 0", "alt 1", "alt 2"]
    assert [u["data"]["aspectRatio"] for u in uploads] == [
        {"width": 80 + n, "height": 60} for n in range(3)
    ]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)


def test_a_video_embed(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    result = publish(
        bsky, account, tokens, media_settings, Media(media_host.video(), "video", alt_text="clip")
    )
    [upload] = sandbox.uploads("bluesky")
    assert (upload["kind"], upload["alt"], upload["attached_to"]) == (
        "video",
        "clip",
        [result.external_id],
    )


def test_limits_are_refused_naming_them(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="at most 4 images; got 5"):
        publish(bsky, account, tokens, media_settings, *[Media(media_host.image())] * 5)
    with pytest.raises(ContentInvalid, match="item 1 is a gif, not accepted"):
        publish(bsky, account, tokens, media_settings, Media(media_host.image("gif"), "gif"))
    with pytest.raises(ContentInvalid, match=r"the limit is 1\.0 MB") as caught:
        publish(bsky, account, tokens, media_settings, Media(media_host.image(pad=1_000_001)))
    assert caught.value.rule == "bluesky.media_size"
    # The PDS's own limit, scaled down, in its own error shape.
    sandbox.set_options("bluesky", image_max_bytes=500)
    with pytest.raises(PermanentError, match="over 500 bytes"):
        publish(bsky, account, tokens, media_settings, Media(media_host.image()))
    assert sandbox.posts("bluesky") == []


def test_a_failed_upload_then_a_retry_reusing_what_was_uploaded(
    bsky: BlueskyProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    ledger = MemoryLedger()
    items = (Media(media_host.image(tag="a")), Media(media_host.image(tag="b")))
    # The second blob fails (past the in-call retries): nothing is published.
    sandbox.inject("bluesky", "error", status=502, path="uploadBlob", times=3)
    with pytest.raises(TransientError):
        publish(bsky, account, tokens, media_settings, *items, ledger=ledger)
    assert sandbox.posts("bluesky") == []
    result = publish(bsky, account, tokens, media_settings, *items, ledger=ledger)
    uploads = sandbox.uploads("bluesky")
    assert len(uploads) == 2
    assert all(u["attached_to"] == [result.external_id] for u in uploads)
