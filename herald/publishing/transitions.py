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

from herald.models import Post, PostStatus, transition
from herald.telemetry import metrics

log = structlog.get_logger("herald.publishing")


def move(
    session: Session,
    post_id: uuid.UUID,
    *,
    from_: PostStatus | Iterable[PostStatus],
    to: PostStatus,
    site: str,
    owned: bool = False,
    only_if: Iterable[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """:func:`transition`, with a lost move logged and counted. Returns whether it won.

    ``site`` names the caller in the log and metric; ``owned`` says the caller claimed the
    post, so a loss is an error rather than an ordinary race."""
    sources = (from_,) if isinstance(from_, PostStatus) else tuple(from_)
    if transition(session, post_id, from_=sources, to=to, only_if=only_if, **values):
        return True
    lost(session, post_id, from_=sources, to=to, site=site, owned=owned)
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
