"""Store a post to publish later — idempotently, and only if it can be published at all."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald.contracts import SchedulePost
from herald.models import Integration, IntegrationStatus, Post, PostStatus, utcnow
from herald.providers.base import ContentInvalid, Media, PostDraft, ProviderError
from herald.providers.registry import UnknownProvider, get_provider
from herald.security.credentials import account_of
from herald.settings import Settings
from herald.telemetry.tracing import current_trace_context, trace_columns, tracer

log = structlog.get_logger("herald.publishing")


class SchedulingError(Exception):
    """A request to schedule that cannot be honoured. ``status`` is the HTTP equivalent."""

    code = "invalid_request"
    status = 422

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IntegrationNotFound(SchedulingError):
    code = "integration_not_found"
    status = 404


class IntegrationUnavailable(SchedulingError):
    code = "integration_unavailable"
    status = 409


class ScheduleOutOfRange(SchedulingError):
    code = "scheduled_at_out_of_range"


class ContentRejected(SchedulingError):
    code = "content_invalid"


class IdempotencyConflict(SchedulingError):
    code = "idempotency_conflict"
    status = 409


def draft_of(post: Post) -> PostDraft:
    """What a provider needs from the post. The post id is the idempotency key at the network:
    stable across every attempt, and unique across workspaces."""
    return PostDraft(
        text=post.content,
        idempotency_key=str(post.id),
        media=tuple(
            Media(
                url=m["url"],
                kind=m.get("kind", "image"),
                size_bytes=m.get("size_bytes"),
                alt_text=m.get("alt_text"),
            )
            for m in post.media
        ),
        settings=dict(post.provider_settings or {}),
    )


@tracer.start_as_current_span("herald.schedule_post", record_exception=False)
def schedule_post(
    session: Session,
    request: SchedulePost,
    settings: Settings,
    *,
    correlation_id: str | None = None,
) -> tuple[Post, bool]:
    """Create the post, or return the one this idempotency key already made.

    Returns ``(post, created)``. Raises :class:`SchedulingError` subclasses for requests that
    can never succeed; nothing is written then. The post keeps the trace context it was
    scheduled under (this function's span, inside the API request's or the schedule task's
    trace), which every later attempt continues.
    """
    now = utcnow()
    existing = _by_key(session, request)
    if existing is not None:
        _same_request_or_conflict(existing, request)
        return existing, False

    integration = session.scalar(
        select(Integration).where(
            Integration.id == request.integration_id,
            Integration.workspace_id == request.workspace_id,
        )
    )
    if integration is None:
        # Another workspace's integration is indistinguishable from a missing one.
        raise IntegrationNotFound("no such integration in this workspace")
    check_integration(integration)
    check_window(request.scheduled_at, settings, now)

    post = Post(
        workspace_id=request.workspace_id,
        integration_id=integration.id,
        content=request.content,
        media=[m.model_dump(mode="json") for m in request.media],
        provider_settings=request.provider_settings,
        scheduled_at=request.scheduled_at,
        status=PostStatus.SCHEDULED,
        idempotency_key=request.idempotency_key,
        correlation_id=correlation_id,
        **trace_columns(current_trace_context()),
    )
    validate_content(post, integration, settings)
    try:
        with session.begin_nested():
            session.add(post)
    except IntegrityError:
        # A concurrent request with the same key won the insert: return its post.
        winner = _by_key(session, request)
        if winner is None:
            raise
        _same_request_or_conflict(winner, request)
        return winner, False
    log.info(
        "post.scheduled",
        post_id=str(post.id),
        provider=integration.provider,
        scheduled_at=post.scheduled_at.isoformat(),
    )
    return post, True


def _by_key(session: Session, request: SchedulePost) -> Post | None:
    return session.scalar(
        select(Post).where(
            Post.workspace_id == request.workspace_id,
            Post.idempotency_key == request.idempotency_key,
        )
    )


def _same_request_or_conflict(post: Post, request: SchedulePost) -> None:
    """A key names one post: asked again with anything it would publish differently (its
    account, text, time, media or network settings), it is a conflict, not that post."""
    if (
        post.integration_id != request.integration_id
        or post.content != request.content
        or post.scheduled_at != request.scheduled_at
        or post.media != [m.model_dump(mode="json") for m in request.media]
        or _as_stored(post.provider_settings or {}) != _as_stored(request.provider_settings or {})
    ):
        raise IdempotencyConflict(
            "this idempotency key was already used for a different post",
            post_id=str(post.id),
        )


def _as_stored(value: Any) -> Any:
    """``value`` with every number as a Decimal of what it says: Postgres keeps a JSON number
    as a decimal, so a float reads back as the number it wrote (1e308 as the integer 10**308),
    and only the numbers' values can be compared."""
    if isinstance(value, dict):
        return {key: _as_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_stored(item) for item in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def check_integration(integration: Integration) -> None:
    """Refuse a post for an integration that needs its user or is switched off."""
    if integration.status in (IntegrationStatus.NEEDS_REAUTH, IntegrationStatus.DISABLED):
        raise IntegrationUnavailable(
            f"integration is {integration.status.value}; reconnect it before scheduling"
        )


def check_window(scheduled_at: datetime, settings: Settings, now: datetime) -> None:
    """Refuse a time too far in the past or the future."""
    if scheduled_at < now - timedelta(seconds=settings.schedule_max_past_s):
        raise ScheduleOutOfRange(
            f"scheduled_at is more than {settings.schedule_max_past_s} s in the past"
        )
    if scheduled_at > now + timedelta(days=settings.schedule_max_future_days):
        raise ScheduleOutOfRange(
            f"scheduled_at is more than {settings.schedule_max_future_days} days ahead"
        )


def validate_content(post: Post, integration: Integration, settings: Settings) -> None:
    """Refuse content the network would refuse (its own limits, in its own units)."""
    try:
        provider = get_provider(integration.provider, settings)
    except UnknownProvider:
        raise IntegrationUnavailable(
            f"provider {integration.provider!r} is not supported"
        ) from None
    try:
        provider.validate(draft_of(post), account_of(integration))
    except ContentInvalid as exc:
        raise ContentRejected(exc.message, rule=exc.rule) from None
    except ProviderError as exc:
        # Validation that needs the network (e.g. an instance's limits) could not run now;
        # the post is validated again before publishing.
        log.warning("post.validation_deferred", provider=integration.provider, error=str(exc))
    finally:
        close = getattr(provider, "close", None)
        if callable(close):
            close()
