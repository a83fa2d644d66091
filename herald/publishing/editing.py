"""Edit, reschedule or cancel a post that has not started publishing: the API's ``PATCH`` and
``DELETE`` and the ``herald.posts.reschedule`` / ``herald.posts.cancel`` tasks run this code.

An edit is one conditional UPDATE: ``WHERE status = <the status read> AND version = <the
version read>``, which moves ``version`` on. The dispatcher's claim is a conditional UPDATE of
the same row (``scheduled|retrying → queued``), so the two are serialised by the database and
exactly one wins: an edit that comes second finds the post ``queued`` (or further) and is
refused (409) — the post goes out as it was when it was claimed, which is what the editor is
told; a claim that comes second takes the edited post. The publish run reads the post only
after the claim and claims ``publishing`` on the version it read, so a post is never
published in a form that an accepted edit replaced. A cancel is the same race with the same
outcome: once cancelled, no claim can take the post.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from herald.contracts import PostChanges
from herald.models import Integration, Post, PostMediaUpload, PostStatus, transition, utcnow
from herald.publishing.scheduling import (
    SchedulingError,
    check_integration,
    check_window,
    validate_content,
)
from herald.publishing.transitions import move
from herald.settings import Settings
from herald.telemetry import context

log = structlog.get_logger("herald.publishing")

#: Statuses an edit may change: the post is not claimed for publishing.
EDITABLE = (PostStatus.DRAFT, PostStatus.SCHEDULED, PostStatus.RETRYING)
CANCELLABLE = (PostStatus.DRAFT, PostStatus.SCHEDULED, PostStatus.QUEUED, PostStatus.RETRYING)


class PostNotFound(SchedulingError):
    code = "post_not_found"
    status = 404


class PostNotEditable(SchedulingError):
    code = "post_not_editable"
    status = 409


class PostNotCancellable(SchedulingError):
    code = "post_not_cancellable"
    status = 409


class NothingToChange(SchedulingError):
    code = "nothing_to_change"


class VersionMismatch(SchedulingError):
    code = "version_mismatch"
    status = 412


def load(session: Session, workspace_id: uuid.UUID, post_id: uuid.UUID) -> Post:
    post = session.scalar(select(Post).where(Post.id == post_id, Post.workspace_id == workspace_id))
    if post is None:
        raise PostNotFound("no such post in this workspace")
    return post


def edit_post(
    session: Session,
    workspace_id: uuid.UUID,
    post_id: uuid.UUID,
    changes: PostChanges,
    settings: Settings,
    *,
    expected_version: int | None = None,
) -> Post:
    """Apply ``changes`` to a post that is not claimed for publishing, validated as when
    scheduling; returns the post as stored. Raises :class:`SchedulingError` subclasses (404,
    409 when it is claimed or finished, 412 when ``expected_version`` is not the stored one)."""
    post = load(session, workspace_id, post_id)
    if expected_version is not None and post.version != expected_version:
        raise _mismatch(post)
    if post.status not in EDITABLE:
        raise _not_editable(post)
    integration = session.get(Integration, post.integration_id)
    assert integration is not None
    check_integration(integration)
    values = _values(changes, post, settings)
    candidate = Post(
        id=post.id,
        content=values.get("content", post.content),
        media=values.get("media", post.media),
        provider_settings=values.get("provider_settings", post.provider_settings),
    )
    validate_content(candidate, integration, settings)
    result = session.execute(
        update(Post)
        .where(Post.id == post.id, Post.status == post.status, Post.version == post.version)
        .values(version=Post.version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    session.refresh(post)
    if result.rowcount != 1:  # claimed, cancelled or edited since it was read
        raise _not_editable(post) if post.status not in EDITABLE else _mismatch(post)
    if "media" in values:
        # What an earlier attempt uploaded is of the old media (its pictures, alt texts, order):
        # never reused for the new.
        session.execute(delete(PostMediaUpload).where(PostMediaUpload.post_id == post.id))
    log.info("post.edited", post_id=str(post.id), version=post.version, changed=sorted(values))
    return post


def _values(changes: PostChanges, post: Post, settings: Settings) -> dict[str, Any]:
    values = changes.changed()
    if not values:
        raise NothingToChange(
            "name at least one of content, media, provider_settings, scheduled_at"
        )
    if "media" in values:
        values["media"] = [m.model_dump(mode="json") for m in values["media"]]
    if "scheduled_at" in values:
        check_window(values["scheduled_at"], settings, utcnow())
        if post.status is PostStatus.RETRYING:  # its next try is the new time
            values["next_attempt_at"] = values["scheduled_at"]
    return values


def cancel_post(session: Session, workspace_id: uuid.UUID, post_id: uuid.UUID) -> Post:
    """Cancel a post that has not started publishing; cancelling it again changes nothing."""
    return cancel(session, workspace_id, post_id)[0]


def cancel(session: Session, workspace_id: uuid.UUID, post_id: uuid.UUID) -> tuple[Post, bool]:
    """:func:`cancel_post`, and whether this call is the one that cancelled it (of several
    cancels at once, one is: the others find it cancelled)."""
    post = load(session, workspace_id, post_id)
    if post.status is PostStatus.CANCELLED:
        return post, False
    # From any cancellable status, not just the one read: a claim in between (scheduled →
    # queued) must not turn a cancel into a refusal.
    if post.status not in CANCELLABLE or not transition(
        session, post.id, from_=CANCELLABLE, to=PostStatus.CANCELLED
    ):
        now = session.scalar(select(Post.status).where(Post.id == post.id))
        session.refresh(post)
        if now is PostStatus.CANCELLED:  # cancelled meanwhile: the same outcome
            return post, False
        raise PostNotCancellable(
            f"a {post.status.value} post cannot be cancelled", status=post.status.value
        )
    session.refresh(post)
    log.info("post.cancelled", post_id=str(post.id))
    return post, True


def _not_editable(post: Post) -> PostNotEditable:
    return PostNotEditable(
        f"a {post.status.value} post cannot be edited: it is claimed for publishing or finished",
        status=post.status.value,
    )


def _mismatch(post: Post) -> VersionMismatch:
    return VersionMismatch(
        f"the post is at version {post.version}: read it again, then edit",
        current_version=post.version,
    )


#: ``last_error.code`` of a post whose publish message an operator revoked.
REVOKED_CODE = "publish_revoked"


def fail_revoked(session: Session, post_id: uuid.UUID, task_id: str) -> bool:
    """The post whose publish message an operator revoked before it ran (Flower, ``celery
    control revoke``) fails, saying so, instead of waiting as ``queued`` until the sweep takes
    its message for lost and sends another: a revoke means "do not publish this". Only a post
    still ``queued`` moves; one that went on (another message claimed it, it was cancelled or
    edited) is left as it is. ``POST /posts/{id}/retry`` schedules it again. Returns whether
    it moved."""
    task = context.clean_id(task_id)
    failed = move(
        session,
        post_id,
        from_=PostStatus.QUEUED,
        to=PostStatus.FAILED,
        site="revoked",
        last_error_code=REVOKED_CODE,
        last_error_message=(
            f"its publish task{f' {task}' if task else ''} was revoked before it ran "
            "(Flower or celery control revoke): not published; retry the post to publish it"
        ),
    )
    if failed:
        log.warning("post.revoked", post_id=str(post_id), task_id=task)
    return failed
