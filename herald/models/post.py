"""Posts, their publish attempts and their analytics snapshots.

The status machine::

    draft → scheduled → queued → publishing → published
                 ↑         │          ├──→ retrying ──→ queued (when due again)
                 │         │          ├──→ failed
                 │         │          └──→ needs_review   (outcome at the provider unknown)
                 │         ├──→ retrying (its integration is paused by a rate limit)
                 │         └──→ failed   (its integration needs the user to reconnect)
                 └─────── cancelled (from draft, scheduled, queued or retrying)
    failed, needs_review ──→ scheduled   (an operator's deliberate retry)

Every move is a conditional UPDATE (``WHERE status IN <expected>``) through
:func:`transition`: of two workers racing for one post, exactly one wins.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    literal,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from herald.models.base import (
    Base,
    RedactedText,
    Timestamps,
    UUIDPrimaryKey,
    in_workspace,
    keyed_by_workspace,
    str_enum,
    utcnow,
)


class PostStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEEDS_REVIEW = "needs_review"


S = PostStatus
ALLOWED_TRANSITIONS: dict[PostStatus, frozenset[PostStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.PUBLISHING, S.CANCELLED, S.QUEUED, S.RETRYING, S.FAILED}),
    S.PUBLISHING: frozenset({S.PUBLISHED, S.RETRYING, S.FAILED, S.NEEDS_REVIEW}),
    S.RETRYING: frozenset({S.QUEUED, S.PUBLISHING, S.CANCELLED, S.FAILED}),
    S.FAILED: frozenset({S.SCHEDULED}),
    S.NEEDS_REVIEW: frozenset({S.SCHEDULED, S.PUBLISHED, S.FAILED}),
    S.PUBLISHED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset({S.PUBLISHED, S.FAILED, S.CANCELLED, S.NEEDS_REVIEW})


class Post(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "posts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        keyed_by_workspace(),
        in_workspace("integration_id", "integrations", ondelete="RESTRICT"),
        Index("ix_posts_status_scheduled_at", "status", "scheduled_at"),
        Index("ix_posts_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_posts_integration_status", "integration_id", "status"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    integration_id: Mapped[uuid.UUID]
    content: Mapped[str] = mapped_column(Text)
    media: Mapped[list[Any]] = mapped_column(default=list)
    provider_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    scheduled_at: Mapped[datetime]
    status: Mapped[PostStatus] = mapped_column(
        str_enum(PostStatus, "post_status"), default=PostStatus.SCHEDULED
    )
    idempotency_key: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(500))
    external_url: Mapped[str | None] = mapped_column(String(1000))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts made before the last deliberate retry: each retry gets a fresh budget, while
    # attempt numbers stay unique for the post's whole life.
    attempts_at_reschedule: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    publishing_started_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(RedactedText)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    # The sweep's work on a post stuck in ``publishing`` (reset by every claim): resolutions
    # started, and the time before which no sweep takes it (a lease, then a backoff).
    resolve_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    resolve_after: Mapped[datetime | None]
    # The W3C trace context the post was scheduled (or deliberately retried) under: every
    # attempt, refresh and reconcile of the post continues that trace.
    traceparent: Mapped[str | None] = mapped_column(String(64))
    tracestate: Mapped[str | None] = mapped_column(String(512))
    # Moves on with every edit of what is published (content, media, settings, time): the
    # ETag of ``PATCH /api/postiz/posts/{id}``, checked in the edit's conditional UPDATE.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class PublishAttempt(UUIDPrimaryKey, Base):
    """One try at publishing one post: written before the provider call, finished after."""

    __tablename__ = "publish_attempts"
    __table_args__ = (
        UniqueConstraint("post_id", "attempt_number"),
        in_workspace("post_id", "posts", ondelete="CASCADE"),
        Index("ix_publish_attempts_provider_started", "provider", "started_at"),
        Index("ix_publish_attempts_workspace_started", "workspace_id", "started_at"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    post_id: Mapped[uuid.UUID]
    provider: Mapped[str] = mapped_column(String(32))
    attempt_number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    latency_ms: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(RedactedText)
    http_status: Mapped[int | None]
    provider_request_id: Mapped[str | None] = mapped_column(String(200))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    task_id: Mapped[str | None] = mapped_column(String(64))
    # The process that ran it (``host:pid``) and that process's pid namespace: a worker in the
    # same namespace can prove the process gone (herald.telemetry.context.process_gone).
    worker: Mapped[str | None] = mapped_column(String(200))
    process_ns: Mapped[str | None] = mapped_column(String(64))


class PostMetric(UUIDPrimaryKey, Base):
    """An analytics snapshot of a published post as the network reported it."""

    __tablename__ = "post_metrics"
    __table_args__ = (
        Index("ix_post_metrics_post_fetched", "post_id", "fetched_at"),
        in_workspace("post_id", "posts", ondelete="CASCADE"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    post_id: Mapped[uuid.UUID]
    provider: Mapped[str] = mapped_column(String(32))
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    likes: Mapped[int] = mapped_column(Integer, default=0)
    reposts: Mapped[int] = mapped_column(Integer, default=0)
    replies: Mapped[int] = mapped_column(Integer, default=0)
    quotes: Mapped[int] = mapped_column(Integer, default=0)
    impressions: Mapped[int | None] = mapped_column(Integer)
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)


def attempts_since_reschedule(post: Post, attempt_number: int | None = None) -> int:
    """How many attempts count against the retry budget (those since the last reschedule)."""
    return (attempt_number if attempt_number is not None else post.attempts) - (
        post.attempts_at_reschedule or 0
    )


def released_at(now: datetime) -> ColumnElement[datetime]:
    """The ``next_attempt_at`` of a waiting ``retrying`` post whose wait ended at ``now`` (a
    refresh, a reconnect, a closed circuit): now, or its ``scheduled_at`` if it was moved later
    meanwhile (an edit moves a retrying post's next attempt with it)."""
    at = literal(now, Post.scheduled_at.type)
    return case((Post.scheduled_at > at, Post.scheduled_at), else_=at)


class IllegalTransition(ValueError):
    """A programming error: the code asked for a move the status machine does not have."""


def transition(
    session: Session,
    post_id: uuid.UUID,
    *,
    from_: PostStatus | Iterable[PostStatus],
    to: PostStatus,
    only_if: Iterable[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move one post from one of ``from_`` to ``to`` if, and only if, it is still there.

    Returns whether this caller won. ``only_if`` adds conditions the row must still meet (the
    attempt the caller saw, say); ``values`` are further columns to set in the same UPDATE.
    """
    sources = frozenset([from_] if isinstance(from_, PostStatus) else from_)
    for source in sources:
        if to not in ALLOWED_TRANSITIONS[source]:
            raise IllegalTransition(f"{source} → {to} is not a post transition")
    stmt = (
        update(Post)
        .where(Post.id == post_id, Post.status.in_(sources), *only_if)
        .values(status=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(stmt)
    assert isinstance(result, CursorResult)
    return result.rowcount == 1
