"""LinkedIn: images and a video through initializeUpload + PUT (video in parts, finalized),
polled until AVAILABLE, referenced by URN with alt text; limits; a failed part; reuse."""

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
from herald.providers.linkedin import LinkedInProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish, seeded_account


@pytest.fixture
def linkedin(media_settings: Settings) -> Iterator[LinkedInProvider]:
    provider = LinkedInProvider(media_settings, client_id="herald", client_secret="s")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    return seeded_account(sandbox, "linkedin", "Dana")


def test_several_images_with_alt_text(
    linkedin: LinkedInProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    items = [Media(media_host.image(tag=str(n)), alt_text=f"slide {n}") for n in range(3)]
    result = publish(linkedin, account, tokens, media_settings, *items)
    uploads = sandbox.uploads("linkedin")
    assert [u["alt"] for u in uploads] == ["slide 0", "slide 1", "slide 2"]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)


def test_a_video_in_parts_and_a_failed_part_then_a_clean_restart(
    linkedin: LinkedInProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    sandbox.set_options("linkedin", video_part_bytes=20_000)
    account, tokens = seeded
    ledger = MemoryLedger()
    video = Media(media_host.video(size=50_000), "video")
    sandbox.inject("linkedin", "error", status=500, path="/dms-uploads/", method="PUT", times=3)
    with pytest.raises(TransientError):
        publish(linkedin, account, tokens, media_settings, video, ledger=ledger)
    assert sandbox.posts("linkedin") == []
    result = publish(linkedin, account, tokens, media_settings, video, ledger=ledger)
    done = [u for u in sandbox.uploads("linkedin") if u["attached_to"]]
    assert [(u["kind"], u["bytes"], u["attached_to"]) for u in done] == [
        ("video", 50_000, [result.external_id])
    ]
    puts = [r for r in sandbox.requests("linkedin") if r["method"] == "PUT"]
    assert len(puts) == 3 + 3  # three failed tries of part 0, then three parts


def test_limits_and_processing_failure(
    linkedin: LinkedInProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="the minimum is 3 s"):
        publish(
            linkedin, account, tokens, media_settings, Media(media_host.video(seconds=1), "video")
        )
    with pytest.raises(ContentInvalid, match="up to 20 images, or one GIF or one video alone"):
        publish(
            linkedin,
            account,
            tokens,
            media_settings,
            Media(media_host.image()),
            Media(media_host.video(), "video"),
        )
    sandbox.set_options("linkedin", processing_fails=True)
    with pytest.raises(PermanentError, match="could not process"):
        publish(linkedin, account, tokens, media_settings, Media(media_host.video(), "video"))
    sandbox.set_options("linkedin", image_max_bytes=100)
    with pytest.raises(PermanentError, match="larger than 100 bytes"):
        publish(linkedin, account, tokens, media_settings, Media(media_host.image()))
    assert sandbox.posts("linkedin") == []
