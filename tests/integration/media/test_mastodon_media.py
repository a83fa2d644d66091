"""Mastodon: /api/v2/media (202 while processing, polled), alt text as description, the
instance's own limits, faults, reuse."""

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
from herald.providers.mastodon import MastodonProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish, seeded_account


@pytest.fixture
def masto(media_settings: Settings) -> Iterator[MastodonProvider]:
    provider = MastodonProvider(media_settings, client_id="herald-app", client_secret="s")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    return seeded_account(sandbox, "mastodon", "bob")


def test_images_and_a_video_with_descriptions(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    sandbox.set_options("mastodon", processing_polls=2)
    account, tokens = seeded
    items = [
        Media(media_host.image("jpg", tag="1"), alt_text="first"),
        Media(media_host.image("png", tag="2"), alt_text="second"),
        Media(media_host.video(), "video", alt_text="a clip"),
    ]
    result = publish(masto, account, tokens, media_settings, *items)
    uploads = sandbox.uploads("mastodon")
    assert [(u["kind"], u["alt"]) for u in uploads] == [
        ("image", "first"),
        ("image", "second"),
        ("video", "a clip"),
    ]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)
    polls = [r for r in sandbox.requests("mastodon") if r["path"].startswith("/api/v1/media/")]
    assert len(polls) == 2


def test_the_instance_limits_are_read_and_named(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    sandbox.set_options(
        "mastodon", image_size_limit=1000, description_limit=10, max_media_attachments=2
    )
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="the limit is 10") as caught:
        publish(
            masto, account, tokens, media_settings, Media(media_host.image(), alt_text="x" * 11)
        )
    assert caught.value.rule == "mastodon.alt_text_length"
    with pytest.raises(ContentInvalid, match="at most 2 attachments; got 3"):
        publish(masto, account, tokens, media_settings, *[Media(media_host.image())] * 3)
    with pytest.raises(ContentInvalid, match="the limit is 1,000 bytes") as caught:
        publish(masto, account, tokens, media_settings, Media(media_host.image(pad=1000)))
    assert caught.value.rule == "mastodon.media_size"
    assert sandbox.uploads("mastodon") == []


def test_processing_failure_and_a_failed_upload(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    sandbox.set_options("mastodon", processing_fails=True)
    with pytest.raises(PermanentError, match="Error processing"):
        publish(masto, account, tokens, media_settings, Media(media_host.video(), "video"))
    sandbox.inject("mastodon", "error", status=500, path="/api/v2/media", times=3)
    with pytest.raises(TransientError):
        publish(masto, account, tokens, media_settings, Media(media_host.image()))
    assert sandbox.posts("mastodon") == []


def test_a_retry_reuses_the_upload(
    masto: MastodonProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    ledger = MemoryLedger()
    image = Media(media_host.image(), alt_text="once")
    sandbox.inject("mastodon", "error", status=503, path="/api/v1/statuses", times=3)
    with pytest.raises(TransientError):
        publish(masto, account, tokens, media_settings, image, ledger=ledger)
    result = publish(masto, account, tokens, media_settings, image, ledger=ledger)
    [upload] = sandbox.uploads("mastodon")
    assert upload["attached_to"] == [result.external_id]
