"""``/api/postiz/posts``: schedule, read, list, edit, cancel and retry posts of one workspace.

Scheduling goes through :func:`herald.publishing.scheduling.schedule_post`, the same code the
``herald.posts.schedule`` task runs; edits and cancels through :mod:`herald.publishing.editing`,
as ``herald.posts.reschedule`` and ``herald.posts.cancel`` do. Status changes are conditional
UPDATEs, so a request racing a worker either wins or answers 409.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from herald.api.deps import (
    Caller,
    CurrentCaller,
    audit_change,
    audit_now,
    report_if_foreign,
    settings_of,
    tenant_session,
)
from herald.api.errors import COMMON_RESPONSES, ApiError, ErrorEnvelope
from herald.api.paths import PREFIX
from herald.api.ratelimit import RATE_LIMITED, rate_limit
from herald.api.schemas import AttemptOut, PostDetail, PostOut, PostPage, ScheduleRequest
from herald.contracts import Instant, PostChanges, in_utc
from herald.models import Integration, Post, PostStatus, PublishAttempt, transition, utcnow
from herald.publishing import editing
from herald.publishing.scheduling import IntegrationNotFound, schedule_post
from herald.security.audit import EventType, Severity
from herald.telemetry import context
from herald.telemetry.tracing import current_trace_context, trace_columns

router = APIRouter(
    prefix=f"{PREFIX}/posts",
    tags=["posts"],
    responses={**COMMON_RESPONSES, **RATE_LIMITED},
    dependencies=[Depends(rate_limit)],
)

RETRYABLE = frozenset({PostStatus.FAILED, PostStatus.NEEDS_REVIEW})
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorEnvelope, "description": "Not possible in the post's status"}
}


def _with_provider(caller: Caller) -> Select[tuple[Post, str]]:
    return (
        select(Post, Integration.provider)
        .join(Integration, Integration.id == Post.integration_id)
        .where(Post.workspace_id == caller.workspace_id)
    )


def _load(session: Session, caller: Caller, post_id: uuid.UUID) -> tuple[Post, str]:
    row = session.execute(_with_provider(caller).where(Post.id == post_id)).first()
    if row is None:
        report_if_foreign(caller, Post, post_id)
        raise ApiError(404, "post_not_found", "no such post in this workspace")
    return row[0], row[1]


def _present(session: Session, post: Post, provider: str) -> PostOut:
    session.refresh(post)  # ``transition`` updates the row, not the loaded object
    return PostOut.of(post, provider)


@router.post(
    "",
    status_code=201,
    responses={
        200: {"model": PostOut, "description": "This idempotency key already made this post"},
        409: {"model": ErrorEnvelope, "description": "Idempotency key used for another post"},
    },
)
def create_post(
    body: ScheduleRequest, caller: CurrentCaller, request: Request, response: Response
) -> PostOut:
    """Schedule a post. Sending the same request again returns the post it made (200)."""
    contract = body.to_contract(caller.workspace_id)
    try:
        with tenant_session(caller) as session:
            post, created = schedule_post(
                session,
                contract,
                settings_of(request),
                correlation_id=context.correlation_id(),
            )
            provider = session.scalar(
                select(Integration.provider).where(Integration.id == post.integration_id)
            )
            assert provider is not None
            out = PostOut.of(post, provider)
            if created:
                audit_change(
                    session,
                    caller,
                    EventType.POST_CHANGED,
                    action="post.create",
                    resource=("post", post.id),
                    message="post scheduled",
                    integration_id=str(post.integration_id),
                )
    except IntegrationNotFound:
        report_if_foreign(caller, Integration, contract.integration_id)
        raise
    if not created:
        response.status_code = 200
    return out


@router.get("/{post_id}")
def get_post(post_id: uuid.UUID, caller: CurrentCaller, response: Response) -> PostDetail:
    """One post with its status, result, last error and every publish attempt; the ``ETag``
    header is what ``PATCH`` needs in ``If-Match``."""
    with tenant_session(caller) as session:
        post, provider = _load(session, caller, post_id)
        response.headers["ETag"] = etag(post)
        attempts = session.scalars(
            select(PublishAttempt)
            .where(
                PublishAttempt.post_id == post.id,
                PublishAttempt.workspace_id == caller.workspace_id,
            )
            .order_by(PublishAttempt.attempt_number)
        ).all()
        return PostDetail(
            **dict(PostOut.of(post, provider)),
            attempts=[AttemptOut.of(a) for a in attempts],
        )


def _encode_cursor(post: Post) -> str:
    raw = json.dumps({"s": post.scheduled_at.isoformat(), "i": str(post.id)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(raw["s"])
        if when.tzinfo is None:
            raise ValueError("naive")
        if not isinstance(raw["i"], str):
            raise TypeError("not an id")
        return in_utc(when), uuid.UUID(raw["i"])
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        # A PydanticCustomError from in_utc is a ValueError too: out of the calendar in UTC.
        # RecursionError: JSON nested deeper than the parser goes.
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from None


@router.get("")
def list_posts(
    *,
    caller: CurrentCaller,
    status: Annotated[list[PostStatus] | None, Query(description="Repeat for several")] = None,
    integration_id: uuid.UUID | None = None,
    scheduled_from: Annotated[Instant | None, Query(description="Inclusive")] = None,
    scheduled_to: Annotated[Instant | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> PostPage:
    """The workspace's posts in ``scheduled_at`` order, filtered, a page at a time."""
    query = _with_provider(caller)
    if status:
        query = query.where(Post.status.in_(status))
    if scheduled_from is not None:
        query = query.where(Post.scheduled_at >= scheduled_from)
    if scheduled_to is not None:
        query = query.where(Post.scheduled_at < scheduled_to)
    if cursor is not None:
        after_at, after_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                Post.scheduled_at > after_at,
                and_(Post.scheduled_at == after_at, Post.id > after_id),
            )
        )
    with tenant_session(caller) as session:
        if integration_id is not None:
            owned = session.scalar(
                select(Integration.id).where(
                    Integration.id == integration_id,
                    Integration.workspace_id == caller.workspace_id,
                )
            )
            if owned is None:
                report_if_foreign(caller, Integration, integration_id)
                raise ApiError(
                    404, "integration_not_found", "no such integration in this workspace"
                )
            query = query.where(Post.integration_id == integration_id)
        rows = session.execute(query.order_by(Post.scheduled_at, Post.id).limit(limit + 1)).all()
        page = rows[:limit]
        return PostPage(
            items=[PostOut.of(post, provider) for post, provider in page],
            next_cursor=_encode_cursor(page[-1][0]) if len(rows) > limit else None,
        )


def etag(post: Post) -> str:
    return f'"{post.version}"'


def _version_in(if_match: str | None) -> int:
    """The version an ``If-Match`` header names (``"3"`` or ``W/"3"``), required: one that is
    missing or not an ETag this API issues is no precondition at all (428)."""
    tag = (if_match or "").strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 12:  # "²" is a digit to isdigit()
        raise ApiError(
            428,
            "precondition_required",
            "send If-Match with the post's ETag (GET it first): edits are conditional",
        )
    return int(tag)


EDIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CONFLICT,
    412: {"model": ErrorEnvelope, "description": "If-Match is not the post's current ETag"},
    428: {"model": ErrorEnvelope, "description": "If-Match is missing or not an ETag"},
}


@router.patch("/{post_id}", responses=EDIT_RESPONSES)
def edit_post(
    *,
    post_id: uuid.UUID,
    body: PostChanges,
    caller: CurrentCaller,
    request: Request,
    response: Response,
    if_match: Annotated[
        str | None, Header(description="The post's ETag, from GET or a previous edit")
    ] = None,
) -> PostOut:
    """Edit or reschedule a post that is not publishing yet (content, media, provider
    settings, ``scheduled_at``), validated as when scheduling. Conditional: ``If-Match`` must
    carry the post's current ETag (412 otherwise). A post the dispatcher already claimed, or
    that finished, is not edited (409): it goes out, or went out, as it was."""
    expected = _version_in(if_match)
    with tenant_session(caller) as session:
        _, provider = _load(session, caller, post_id)
        post = editing.edit_post(
            session,
            caller.workspace_id,
            post_id,
            body,
            settings_of(request),
            expected_version=expected,
        )
        audit_change(
            session,
            caller,
            EventType.POST_CHANGED,
            action="post.edit",
            resource=("post", post.id),
            message="post edited",
            changed=sorted(body.model_dump(exclude_unset=True)),
            version=post.version,
        )
        response.headers["ETag"] = etag(post)
        return PostOut.of(post, provider)


@router.delete("/{post_id}", responses=CONFLICT)
def cancel_post(post_id: uuid.UUID, caller: CurrentCaller) -> PostOut:
    """Cancel a post that has not started publishing. Cancelling it again changes nothing."""
    with tenant_session(caller) as session:
        _, provider = _load(session, caller, post_id)
        post, cancelled_now = editing.cancel(session, caller.workspace_id, post_id)
        if cancelled_now:  # one audit row however many cancels race
            audit_change(
                session,
                caller,
                EventType.POST_CHANGED,
                action="post.cancel",
                resource=("post", post.id),
                message="post cancelled",
            )
        return PostOut.of(post, provider)


@router.post("/{post_id}/retry", responses=CONFLICT)
def retry_post(post_id: uuid.UUID, caller: CurrentCaller) -> PostOut:
    """Send a ``failed`` or ``needs_review`` post back to ``scheduled``, due now.

    For ``needs_review``, first check the network: the post may already be there.
    """
    with tenant_session(caller) as session:
        post, provider = _load(session, caller, post_id)
        previous, previous_correlation = post.status, post.correlation_id
        if previous not in RETRYABLE or not transition(
            session,
            post.id,
            from_=previous,
            to=PostStatus.SCHEDULED,
            scheduled_at=utcnow(),
            next_attempt_at=None,
            attempts_at_reschedule=post.attempts,  # a fresh attempt budget
            correlation_id=context.correlation_id(),
            **trace_columns(current_trace_context()),  # its attempts join this request's trace
        ):
            session.refresh(post)
            raise ApiError(
                409,
                "post_not_retryable",
                f"a {post.status.value} post cannot be retried",
                details={"status": post.status.value},
            )
        # In the service scope: the chain's head is in any workspace, which RLS hides here.
        audit_now(
            EventType.ADMIN_ACTION,
            actor=caller.actor,
            severity=Severity.MEDIUM,
            action="post.retry",
            workspace_id=caller.workspace_id,
            resource_type="post",
            resource_id=str(post.id),
            message="post sent back to scheduled for another try",
            details={
                "action": "post.retry",
                "from_status": previous.value,
                "previous_correlation_id": previous_correlation,
            },
        )
        return _present(session, post, provider)
