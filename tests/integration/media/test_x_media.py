"""X: images, a GIF and a video uploaded in chunks, alt text, limits, faults, reuse."""

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
from herald.providers.registry import get_provider
from herald.providers.x import CHUNK_BYTES, XProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.media import MediaHost
from tests.integration.media.helpers import publish, seeded_account


@pytest.fixture
def x(media_settings: Settings) -> Iterator[XProvider]:
    provider = get_provider("x", media_settings)
    assert isinstance(provider, XProvider)
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    return seeded_account(sandbox, "x", "alice")


def test_images_with_alt_text_are_attached_to_the_post(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    items = [Media(media_host.image(tag=str(n)), alt_text=f"picture {n}") for n in range(4)]
    result = publish(x, account, tokens, media_settings, *items)
    uploads = sandbox.uploads("x")
    assert [u["alt"] for u in uploads] == [f"picture {n}" for n in range(4)]
    assert all(u["attached_to"] == [result.external_id] for u in uploads)
    assert all(u["mime"] == "image/png" and u["state"] == "succeeded" for u in uploads)


def test_a_video_goes_in_chunks_and_waits_for_processing(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    sandbox.set_options("x", processing_polls=3)
    account, tokens = seeded
    size = 2 * CHUNK_BYTES + 1000
    result = publish(
        x, account, tokens, media_settings, Media(media_host.video(size=size), "video")
    )
    [upload] = sandbox.uploads("x")
    assert (upload["bytes"], upload["kind"], upload["attached_to"]) == (
        size,
        "video",
        [result.external_id],
    )
    paths = [r["path"] for r in sandbox.requests("x")]
    assert sum(p.endswith("/append") for p in paths) == 3
    assert paths.count("/2/media/upload") == 3  # three STATUS reads until succeeded


def test_a_chunk_failure_publishes_nothing_and_the_retry_starts_clean(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    video = Media(media_host.video(size=CHUNK_BYTES + 10), "video")
    sandbox.inject("x", "error", status=500, path="/append", times=4)  # past in-call retries
    ledger = MemoryLedger()
    with pytest.raises(TransientError):
        publish(x, account, tokens, media_settings, video, ledger=ledger)
    assert sandbox.posts("x") == []
    assert ledger.uploads == {}
    result = publish(x, account, tokens, media_settings, video, ledger=ledger)
    done = [u for u in sandbox.uploads("x") if u["attached_to"]]
    assert [u["attached_to"] for u in done] == [[result.external_id]]


def test_a_retry_reuses_the_upload(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    ledger = MemoryLedger()
    image = Media(media_host.image(), alt_text="once")
    sandbox.inject("x", "error", status=503, path="/2/tweets", method="POST", times=1)
    with pytest.raises(TransientError):
        publish(x, account, tokens, media_settings, image, ledger=ledger)
    result = publish(x, account, tokens, media_settings, image, ledger=ledger)
    [upload] = sandbox.uploads("x")  # uploaded once
    assert upload["attached_to"] == [result.external_id]


def test_over_the_limits_is_refused_naming_them(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    media_settings: Settings,
    media_host: MediaHost,
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid, match="up to 4 images, or one GIF or one video alone"):
        publish(
            x,
            account,
            tokens,
            media_settings,
            Media(media_host.image()),
            Media(media_host.video(), "video"),
        )
    with pytest.raises(ContentInvalid, match=r"lasts 141\.0 s; the limit is 140 s") as caught:
        publish(x, account, tokens, media_settings, Media(media_host.video(seconds=141), "video"))
    assert caught.value.rule == "x.media_duration"
    with pytest.raises(ContentInvalid, match="the limit is 1000") as caught:
        publish(x, account, tokens, media_settings, Media(media_host.image(), alt_text="a" * 1001))
    with pytest.raises(ContentInvalid, match="declared video") as caught:
        publish(x, account, tokens, media_settings, Media(media_host.image(), "video"))
    assert caught.value.rule == "x.media_format"
    assert sandbox.uploads("x") == []
    # The network's own answers: its (scaled-down) size limit, and processing that fails.
    sandbox.set_options("x", media_image_max_bytes=100, processing_fails=True)
    with pytest.raises(PermanentError, match="exceeds the 100 bytes allowed for image"):
        publish(x, account, tokens, media_settings, Media(media_host.image()))
    with pytest.raises(PermanentError, match="could not process"):
        publish(x, account, tokens, media_settings, Media(media_host.video(), "video"))
    assert sandbox.posts("x") == []
