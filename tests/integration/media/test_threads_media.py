"""Threads: an image and a video container from the public URL with alt text, a carousel of
item containers polled until FINISHED, processing errors, item containers reused."""

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
from herald.providers.threads import ThreadsProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish, seeded_account


@pytest.fixture
def threads(media_settings: Settings) -> Iterator[ThreadsProvider]:
    provider = ThreadsProvider(media_settings, processing_polls=50, processing_poll_s=0.02)
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    return seeded_account(sandbox, "threads", "alice")


def test_one_image_and_one_video_with_alt_text(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    sandbox.set_options("threads", video_processing_s=0.1)
    image = publish(
        threads, account, tokens, media_settings, Media(media_host.image("jpg"), alt_text="a cat")
    )
    video = publish(
        threads,
        account,
        tokens,
        media_settings,
        Media(media_host.video(), "video", alt_text="a clip"),
        text="clip",
    )
    uploads = sandbox.uploads("threads")
    assert [(u["kind"], u["alt"]) for u in uploads] == [("image", "a cat"), ("video", "a clip")]
    assert [u["attached_to"] for u in uploads] == [[image.external_id], [video.external_id]]


def test_a_carousel_and_a_retry_that_reuses_its_items(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    ledger = MemoryLedger()
    items = [Media(media_host.image("jpg", tag=str(n)), alt_text=f"n{n}") for n in range(3)]
    items.append(Media(media_host.video(), "video"))
    sandbox.inject("threads", "error", status=503, path="threads_publish", times=2)
    with pytest.raises(TransientError):
        publish(threads, account, tokens, media_settings, *items, ledger=ledger)
    result = publish(threads, account, tokens, media_settings, *items, ledger=ledger)
    uploads = sandbox.uploads("threads")
    assert len(uploads) == 4  # each item container made once
    assert all(u["attached_to"] == [result.external_id] for u in uploads)
    [post] = sandbox.posts("threads")
    assert post["data"]["media_type"] == "CAROUSEL_POST"


def test_limits_and_processing_errors(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="a carousel holds 2 to 20 items; got 21"):
        publish(threads, account, tokens, media_settings, *[Media(media_host.image())] * 21)
    with pytest.raises(ContentInvalid, match="item 1 is a gif, not accepted"):
        publish(threads, account, tokens, media_settings, Media(media_host.image("gif"), "gif"))
    with pytest.raises(ContentInvalid, match="accepted: image/jpeg, image/png") as caught:
        publish(threads, account, tokens, media_settings, Media(media_host.image("webp")))
    assert caught.value.rule == "threads.media_format"
    sandbox.set_options("threads", processing_fails=True)
    with pytest.raises(PermanentError, match="could not process"):
        publish(threads, account, tokens, media_settings, Media(media_host.video(), "video"))
    assert sandbox.posts("threads") == []
