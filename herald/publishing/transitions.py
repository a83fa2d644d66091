"""Checked status moves on the publish path.

:func:`herald.models.transition` says whether the caller won its conditional UPDATE. On the
publish path a loss is never ignored: :func:`move` logs it with the status the post is in now
and counts it in ``herald.publish.lost_transitions`` (by from, to and site). Some losses are
ordinary races (two messages for one post, a worker finishing while the sweep looks it up);
a loss *from* ``publishing`` by the run that claimed the post means something else moved a
post in flight, which the timing checks in ``herald/settings.py`` exist to prevent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from herald.models import Post, PostStatus, record_event, transition
from herald.telemetry import metrics

log = structlog.get_logger("herald.publishing")

#: Outcomes integrators' webhooks hear about, queued in the transaction that decides them.
EVENTS = {
    PostStatus.PUBLISHED: "post.published",
    PostStatus.FAILED: "post.failed",
    PostStatus.NEEDS_REVIEW: "post.needs_review",
}


def move(
    session: Session,
    post_id: uuid.UUID,
    *,
    from_: PostStatus | Iterable[PostStatus],
    to: PostStatus,
    site: str,
    owned: bool = False,
    only_if: Iterable[ColumnElement[bool]] = (),
    reported_from: PostStatus | None = None,
    **values: Any,
) -> bool:
    """:func:`transition`, with a lost move logged and counted. Returns whether it won.

    ``site`` names the caller in the log and metric; ``owned`` says the caller claimed the
    post, so a loss is an error rather than an ordinary race; ``reported_from`` is the status a
    loss is reported from when the move would take more than one."""
    sources = (from_,) if isinstance(from_, PostStatus) else tuple(from_)
    if transition(session, post_id, from_=sources, to=to, only_if=only_if, **values):
        if to in EVENTS:
            _tell_integrators(session, post_id, to)
        return True
    reported = (reported_from,) if reported_from is not None else sources
    lost(session, post_id, from_=reported, to=to, site=site, owned=owned)
    return False


def lost(
    session: Session,
    post_id: uuid.UUID,
    *,
    from_: tuple[PostStatus, ...],
    to: PostStatus,
    site: str,
    owned: bool = False,
) -> None:
    """Log and count a move from ``from_`` to ``to`` that matched no row (see :func:`move`)."""
    sources = from_
    labels = {"from": "|".join(sorted(s.value for s in sources)), "to": to.value, "site": site}
    metrics.publish_lost_transitions.add(1, labels)
    now = session.scalar(select(Post.status).where(Post.id == post_id))
    (log.error if owned else log.warning)(
        "post.lost_transition",
        post_id=str(post_id),
        status_now=now.value if now is not None else None,
        **labels,
    )


def _tell_integrators(session: Session, post_id: uuid.UUID, to: PostStatus) -> None:
    row = session.execute(
        select(
            Post.workspace_id,
            Post.integration_id,
            Post.external_id,
            Post.external_url,
            Post.last_error_code,
            Post.last_error_message,
            Post.correlation_id,
        ).where(Post.id == post_id)
    ).one()
    data: dict[str, object] = {
        "post_id": str(post_id),
        "integration_id": str(row.integration_id),
        "status": to.value,
        "correlation_id": row.correlation_id,
    }
    if to is PostStatus.PUBLISHED:
        data |= {"external_id": row.external_id, "url": row.external_url}
    else:
        data["error"] = {"code": row.last_error_code, "message": row.last_error_message}
    record_event(session, row.workspace_id, EVENTS[to], data)
