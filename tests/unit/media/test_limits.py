"""The real limits: every adapter's defaults as the networks document them (PROVIDERS.md,
docs/media.md), and the sandbox's defaults agreeing with them (tests scale the sandbox's
down; these are what a deployment meets)."""

from __future__ import annotations

import io
import struct

import pytest

from herald.media.probe import mp4_duration
from herald.providers import bluesky, discord, linkedin, reddit, telegram, threads, x
from herald.providers.base import ContentInvalid, LocalFile, Media, PostDraft
from herald.providers.mastodon import InstanceLimits, parse_limits
from herald.providers.media import check_fetched, one_video_alone
from herald.sandbox.app import load_networks

MB = 1_000_000


def test_the_adapters_defaults_are_the_documented_limits() -> None:
    assert dict(x.MEDIA_LIMITS.max_bytes) == {"image": 5 * MB, "gif": 15 * MB, "video": 512 * MB}
    assert (x.MEDIA_LIMITS.min_duration_s, x.MEDIA_LIMITS.max_duration_s) == (0.5, 140.0)
    assert dict(bluesky.MEDIA_LIMITS.max_bytes) == {"image": 1_000_000, "video": 100_000_000}
    assert dict(telegram.MEDIA_LIMITS.max_bytes) == {
        "image": 10 * MB,
        "gif": 50 * MB,
        "video": 50 * MB,
    }
    assert telegram.MAX_GROUP == 10
    assert threads.MAX_CAROUSEL == 20
    assert threads.MEDIA_LIMITS.max_duration_s == 300.0
    assert discord.MAX_ATTACHMENTS == 10
    assert dict(discord.MEDIA_LIMITS.max_bytes)["image"] == 10 * 1024 * 1024
    assert linkedin.MEDIA_LIMITS.max_bytes["video"] == 500 * MB
    assert reddit.MAX_GALLERY == 20
    defaults = InstanceLimits()
    assert (defaults.image_size_limit, defaults.description_limit) == (16 * 1024 * 1024, 1500)
    assert defaults.max_media_attachments == 4


def test_the_sandbox_defaults_agree_with_the_adapters() -> None:
    nets = load_networks()
    opts = {name: net.default_options for name, net in nets.items()}
    assert opts["x"]["media_image_max_bytes"] == x.MEDIA_LIMITS.cap("image")
    assert opts["x"]["media_video_max_bytes"] == x.MEDIA_LIMITS.cap("video")
    assert opts["bluesky"]["image_max_bytes"] == bluesky.MEDIA_LIMITS.cap("image")
    assert opts["telegram"]["photo_max_bytes"] == telegram.MEDIA_LIMITS.cap("image")
    assert opts["discord"]["attachment_max_bytes"] == discord.MEDIA_LIMITS.cap("image")
    assert opts["threads"]["max_carousel_items"] == threads.MAX_CAROUSEL
    assert opts["reddit"]["image_max_bytes"] == reddit.MEDIA_LIMITS.cap("image")
    instance = parse_limits(
        {
            "configuration": {
                "media_attachments": {
                    k: opts["mastodon"][k] for k in ("image_size_limit", "description_limit")
                }
            }
        }
    )
    assert instance.image_size_limit == InstanceLimits().image_size_limit


def test_a_fetched_file_over_a_limit_names_it() -> None:
    big = LocalFile("/dev/null", 6 * MB, "image/png", 100, 100)
    with pytest.raises(
        ContentInvalid, match=r"X: item 2 \(image\) is 6\.0 MB; the limit is 5\.0 MB"
    ):
        check_fetched(x.MEDIA_LIMITS, 2, Media("u"), big)
    long = LocalFile("/dev/null", MB, "video/mp4", duration_s=301)
    with pytest.raises(ContentInvalid, match=r"lasts 301\.0 s; the limit is 300 s"):
        check_fetched(threads.MEDIA_LIMITS, 1, Media("u", "video"), long)


def test_counts_are_refused_at_scheduling_naming_the_limit() -> None:
    four = tuple(Media("https://h/i.png") for _ in range(5))
    with pytest.raises(ContentInvalid, match="at most 4 images; got 5") as caught:
        one_video_alone(x.MEDIA_LIMITS, PostDraft("t", "k", media=four), x.MAX_IMAGES)
    assert caught.value.rule == "x.media_count"


@pytest.mark.parametrize("version", [0, 1])
def test_mp4_duration_from_mvhd(version: int) -> None:
    if version == 0:
        body = b"\x00\x00\x00\x00" + struct.pack(">IIII", 0, 0, 600, 6000)
    else:
        body = b"\x01\x00\x00\x00" + struct.pack(">QQIQ", 0, 0, 1000, 12_500)
    mvhd = struct.pack(">I4s", 8 + len(body), b"mvhd") + body
    moov = struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd
    data = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00" + moov
    assert mp4_duration(io.BytesIO(data), len(data)) == (10.0 if version == 0 else 12.5)
    assert mp4_duration(io.BytesIO(b"\x00" * 40), 40) is None
