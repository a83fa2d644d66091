"""Cursor pagination shared by the emulated listing endpoints.

Every listing here serves its items newest first; a cursor names the item a page ended on (or
began with), opaquely, as the networks' own cursors do. Each network keeps its own parameter
names, page-size limits and response shape; only the slicing is shared.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from herald.sandbox.records import SandboxPost


def encode_cursor(post_id: str) -> str:
    """An opaque cursor pointing at ``post_id``."""
    return base64.urlsafe_b64encode(post_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    """The post id a cursor points at, or None for a cursor this sandbox never issued."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def older_than(posts: Sequence[SandboxPost], post_id: str) -> list[SandboxPost] | None:
    """The posts listed after ``post_id`` (older ones), or None if it is not in the listing."""
    for index, post in enumerate(posts):
        if post.id == post_id:
            return list(posts[index + 1 :])
    return None


def newer_than(posts: Sequence[SandboxPost], post_id: str) -> list[SandboxPost] | None:
    """The posts listed before ``post_id`` (newer ones), or None if it is not in the listing."""
    for index, post in enumerate(posts):
        if post.id == post_id:
            return list(posts[:index])
    return None
