"""What each network accepts as media, and the checks every adapter shares.

Two moments check media (docs/media.md):

- at scheduling, from the draft alone: how many items of which kinds, and alt text length
  (:func:`check_alt`, plus each adapter's own count rule);
- at publish, once :mod:`herald.media` fetched the files: size, format, dimensions and
  duration against :class:`MediaLimits` (:func:`check_fetched`).

A refusal is a :class:`ContentInvalid` whose message names the network's limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from herald.providers.base import (
    ContentInvalid,
    LocalFile,
    Media,
    MediaKind,
    PostDraft,
    TransientError,
)

MB = 1_000_000
MiB = 1 << 20

IMAGE_FORMATS = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
GIF = frozenset({"image/gif"})
VIDEO_FORMATS = frozenset({"video/mp4", "video/quicktime"})


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """One network's limits. ``max_bytes`` and ``formats`` are per kind; a kind missing from
    ``max_bytes`` is not accepted at all."""

    network: str
    label: str
    max_bytes: Mapping[MediaKind, int]
    formats: Mapping[MediaKind, frozenset[str]] = field(
        default_factory=lambda: {"image": IMAGE_FORMATS, "gif": GIF, "video": VIDEO_FORMATS}
    )
    max_dimension: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    alt_max: int | None = None

    def cap(self, kind: MediaKind) -> int:
        return self.max_bytes.get(kind, 0)


def size_text(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n:,} bytes"


def refuse(limits: MediaLimits, rule: str, message: str) -> ContentInvalid:
    return ContentInvalid(
        f"{limits.label}: {message}", rule=f"{limits.network}.{rule}", provider=limits.network
    )


def check_kinds(limits: MediaLimits, draft: PostDraft) -> None:
    """Kinds the network never takes, and alt text over its limit (scheduling time)."""
    for number, media in enumerate(draft.media, 1):
        if media.kind not in limits.max_bytes:
            raise refuse(limits, "media_kind", f"item {number} is a {media.kind}, not accepted")
        declared = media.size_bytes
        if declared is not None and declared > limits.cap(media.kind):
            raise refuse(
                limits,
                "media_size",
                f"item {number} ({media.kind}) is {size_text(declared)}; the limit is "
                f"{size_text(limits.cap(media.kind))}",
            )
        alt = media.alt_text or ""
        if limits.alt_max is not None and len(alt) > limits.alt_max:
            raise refuse(
                limits,
                "alt_text_length",
                f"alt text of item {number} is {len(alt)} characters; "
                f"the limit is {limits.alt_max}",
            )


def check_fetched(limits: MediaLimits, number: int, media: Media, file: LocalFile) -> None:
    """Refuse a fetched file over one of the network's limits (publish time)."""
    kind = media.kind
    if file.mime not in limits.formats.get(kind, frozenset()):
        accepted = ", ".join(sorted(limits.formats.get(kind, ()))) or "none"
        raise refuse(
            limits,
            "media_format",
            f"item {number} is {file.mime}, declared {kind}; accepted: {accepted}",
        )
    cap = limits.cap(kind)
    if file.size > cap:
        raise refuse(
            limits,
            "media_size",
            f"item {number} ({kind}) is {size_text(file.size)}; the limit is {size_text(cap)}",
        )
    largest = max(file.width or 0, file.height or 0)
    if limits.max_dimension is not None and largest > limits.max_dimension:
        raise refuse(
            limits,
            "media_dimensions",
            f"item {number} is {file.width}x{file.height}; the limit is "
            f"{limits.max_dimension} pixels a side",
        )
    duration = file.duration_s
    if kind == "video" and duration is not None:
        if limits.max_duration_s is not None and duration > limits.max_duration_s:
            raise refuse(
                limits,
                "media_duration",
                f"item {number} lasts {duration:.1f} s; the limit is {limits.max_duration_s:g} s",
            )
        if limits.min_duration_s is not None and duration < limits.min_duration_s:
            raise refuse(
                limits,
                "media_duration",
                f"item {number} lasts {duration:.1f} s; the minimum is {limits.min_duration_s:g} s",
            )


def one_video_alone(limits: MediaLimits, draft: PostDraft, max_images: int) -> None:
    """The common rule: up to ``max_images`` images, or one video (or GIF) alone."""
    kinds = [m.kind for m in draft.media]
    if len(kinds) > max_images:
        raise refuse(limits, "media_count", f"at most {max_images} images; got {len(kinds)}")
    if len(kinds) > 1 and set(kinds) != {"image"}:
        raise refuse(
            limits,
            "media_count",
            f"up to {max_images} images, or one {' or one '.join(_alone(limits))} alone",
        )


def _alone(limits: MediaLimits) -> list[str]:
    return [k.upper() if k == "gif" else k for k in ("gif", "video") if k in limits.max_bytes]


def wait_processed(
    check: Callable[[], bool],
    *,
    provider: str,
    what: str,
    poll_s: float,
    max_s: float,
) -> None:
    """Poll ``check`` (True once the network finished processing; it raises if processing
    failed) every ``poll_s`` until ``max_s``; past that the attempt ends as a transient
    error, and the next attempt uploads again (nothing unprocessed was recorded)."""
    deadline = time.monotonic() + max_s
    while not check():
        if time.monotonic() + poll_s > deadline:
            raise TransientError(
                f"{what} was still processing after {max_s:g} s", provider=provider
            )
        time.sleep(poll_s)


def expiry(seconds: Any, *, margin: float = 0.9) -> datetime | None:
    """When an upload the network keeps ``seconds`` should be considered gone (with margin)."""
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return datetime.now(UTC) + timedelta(seconds=seconds * margin)
    return None
