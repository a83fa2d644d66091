"""Request and response bodies of the posts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from herald.contracts import PostRequest, SchedulePost
from herald.models import Post, PostStatus, PublishAttempt


class ScheduleRequest(PostRequest):
    """The body of ``POST /api/postiz/posts``: the ``herald.posts.schedule`` payload without
    ``workspace_id``, which comes from authentication. The fields and their validators are the
    contract's own, so the API and the task refuse the same payloads."""

    def to_contract(self, workspace_id: uuid.UUID) -> SchedulePost:
        return SchedulePost(workspace_id=workspace_id, **dict(self))


class LastError(BaseModel):
    code: str | None
    message: str | None


class AttemptOut(BaseModel):
    number: int
    outcome: str | None
    error_code: str | None
    error_message: str | None
    http_status: int | None
    latency_ms: int | None
    started_at: datetime
    finished_at: datetime | None
    provider_request_id: str | None
    correlation_id: str | None
    trace_id: str | None

    @classmethod
    def of(cls, attempt: PublishAttempt) -> AttemptOut:
        return cls(
            number=attempt.attempt_number,
            outcome=attempt.outcome,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            http_status=attempt.http_status,
            latency_ms=attempt.latency_ms,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            provider_request_id=attempt.provider_request_id,
            correlation_id=attempt.correlation_id,
            trace_id=attempt.trace_id,
        )


class PostOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    integration_id: uuid.UUID
    provider: str
    status: PostStatus
    content: str
    media: list[Any]
    provider_settings: dict[str, Any]
    scheduled_at: datetime
    idempotency_key: str
    attempt_count: int
    next_attempt_at: datetime | None
    published_at: datetime | None
    external_id: str | None
    external_url: str | None
    last_error: LastError | None
    correlation_id: str | None
    version: int = Field(description="Moves on with every edit; the post's ETag is this number.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, post: Post, provider: str) -> PostOut:
        last_error = (
            LastError(code=post.last_error_code, message=post.last_error_message)
            if post.last_error_code or post.last_error_message
            else None
        )
        return cls(
            id=post.id,
            workspace_id=post.workspace_id,
            integration_id=post.integration_id,
            provider=provider,
            status=post.status,
            content=post.content,
            media=post.media,
            provider_settings=post.provider_settings,
            scheduled_at=post.scheduled_at,
            idempotency_key=post.idempotency_key,
            attempt_count=post.attempts,
            next_attempt_at=post.next_attempt_at,
            published_at=post.published_at,
            external_id=post.external_id,
            external_url=post.external_url,
            last_error=last_error,
            correlation_id=post.correlation_id,
            version=post.version,
            created_at=post.created_at,
            updated_at=post.updated_at,
        )


class PostDetail(PostOut):
    attempts: list[AttemptOut]


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
