"""Claim the posts that are due and mark them queued (beat's ``dispatch_due`` tick).

The claim is one statement: the due posts are ranked and chosen inside it, locked with ``FOR
UPDATE SKIP LOCKED`` (Postgres, so two dispatchers at once take disjoint sets) and moved to
``queued`` by a conditional UPDATE (so even without row locks, on SQLite, a post is queued by
exactly one of them). The caller enqueues ``publish`` for the returned posts only after this
transaction commits.

Which posts, when more are due than one batch holds:

- **per workspace, round robin**: each workspace's due posts are numbered oldest first
  (``row_number() over (partition by workspace_id)``), and the batch takes every workspace's
  first post, then every second one, and so on: a workspace with 50,000 posts due takes its
  share of each batch, not all of it;
- **per provider, inside the claim**: a provider capped by ``provider_concurrency`` gets at most
  its room (cap minus posts queued or publishing) in the batch — counted by a second
  ``row_number() over (partition by provider)`` before the ``LIMIT``, so posts beyond a cap
  never fill the batch while others wait;
- a provider whose circuit is open sends only probes (at most its bound; see circuit.py).

**Batch after batch**: a tick claims a batch (``dispatch_batch_size``), commits it and hands it
over, and claims again while the last batch came back full, there is room under the
backpressure bound and the tick's interval has not run out (:func:`dispatch_due_posts`). The
dispatcher's rate therefore follows the posts due, not one batch per tick.

**Early hand-off**: a post due within the next ``dispatch_lookahead_s`` (one and a half beat
ticks by default) is claimed now and sent with a countdown to its ``scheduled_at``, so the tick
is not the floor of the delay (docs/decisions.md). Publishing still refuses a post before its
``scheduled_at`` (the claim in :mod:`.publisher` requires it), and a countdown message that is
lost is a lost message like any other: the sweep sends it again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import zip_longest

from sqlalchemy import Row, Select, and_, case, func, literal, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from herald.db import service_scope
from herald.models import Integration, Post, PostStatus, handing_over, utcnow
from herald.publishing import circuit
from herald.settings import Settings
from herald.telemetry.tracing import TraceContext

IN_FLIGHT = (PostStatus.QUEUED, PostStatus.PUBLISHING)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DUE_FROM = (PostStatus.SCHEDULED, PostStatus.RETRYING)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A post to publish, with the correlation and trace it was scheduled under (continued by
    publish), and when it is due (a post claimed ahead of time is sent with a countdown)."""

    post_id: uuid.UUID
    correlation_id: str | None
    workspace_id: uuid.UUID
    trace: TraceContext | None
    due_at: datetime | None = None
    #: Its integration's network: posts due now are sent several to a message, one network's
    #: to each (herald.tasks.publishing.publish_signatures).
    provider: str | None = None

    @classmethod
    def of(
        cls,
        row: Row[tuple[uuid.UUID, str | None, uuid.UUID, str | None, str | None, datetime, str]],
    ) -> Claimed:
        post_id, correlation_id, workspace_id, traceparent, tracestate, scheduled_at, provider = row
        return cls(
            post_id,
            correlation_id,
            workspace_id,
            TraceContext.stored(traceparent, tracestate),
            scheduled_at,
            provider,
        )

    def countdown(self, now: datetime | None = None) -> float:
        """Seconds until the post is due (0 when it already is)."""
        if self.due_at is None:
            return 0.0
        return max(0.0, (self.due_at - (now or utcnow())).total_seconds())


#: What a claiming UPDATE returns for each post: the fields of :class:`Claimed`.
CLAIMED_COLUMNS = (
    Post.id,
    Post.correlation_id,
    Post.workspace_id,
    Post.traceparent,
    Post.tracestate,
    Post.scheduled_at,
    select(Integration.provider)
    .where(Integration.id == Post.integration_id)
    .scalar_subquery()
    .label("provider"),
)


def claim_due_posts(
    session: Session, settings: Settings, *, limit: int | None = None
) -> list[Claimed]:
    service_scope(session, "dispatch_due")
    # Backpressure: while workers are behind, due posts wait here, visibly, rather than pile up
    # as messages (where the sweep would mistake a long wait for a lost message).
    waiting = session.scalar(select(func.count()).where(Post.status == PostStatus.QUEUED)) or 0
    room = settings.dispatch_max_queued - waiting
    if room <= 0:
        return []
    now = utcnow()
    batch = min(limit or settings.dispatch_batch_size, room)
    rooms = _provider_rooms(session, settings, now)
    horizon = now + timedelta(seconds=lookahead_s(settings))
    chosen = _chosen(now, horizon, rooms, batch)
    locked = (
        select(Post.id)
        .where(Post.id.in_(chosen), Post.status.in_(DUE_FROM))
        .with_for_update(skip_locked=True, key_share=True)
    )
    claimed = session.execute(
        update(Post)
        .where(Post.id.in_(locked), Post.status.in_(DUE_FROM))
        # queued_at stays empty until the sends are confirmed (confirm_sent): a dispatcher that
        # dies between this commit and its sends leaves posts the sweep finds in seconds.
        .values(status=PostStatus.QUEUED, queued_at=None, updated_at=now)
        .returning(*CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    return in_turns([Claimed.of(row) for row in claimed])


def confirm_sent(session: Session, post_ids: list[uuid.UUID]) -> int:
    """The ``publish`` messages of ``post_ids`` reached the broker: their ``queued_at`` starts
    the queued timeout. Until then a claimed post's ``queued_at`` is empty, and the sweep sends
    it again once ``send_timeout_s`` has passed since its claim
    (:func:`herald.publishing.sweep.requeue_lost`): its dispatcher died before sending it.
    Only posts still ``queued`` and unconfirmed are touched. Returns how many."""
    if not post_ids:
        return 0
    service_scope(session, "dispatch_due")
    result = session.execute(
        update(Post)
        .where(Post.id.in_(post_ids), Post.status == PostStatus.QUEUED, Post.queued_at.is_(None))
        .values(queued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


def mark_unsent(session: Session, settings: Settings, post_ids: list[uuid.UUID]) -> int:
    """Posts claimed whose ``publish`` could not be sent (the broker away): their ``queued_at``
    moves back past ``queued_timeout_s``, so the sweep's next run sends them again
    (:func:`herald.publishing.sweep.requeue_lost`) instead of that timeout later. Only posts
    still ``queued`` are touched (a message that did reach the broker may have been run since).
    Returns how many were marked."""
    if not post_ids:
        return 0
    service_scope(session, "dispatch_due")
    long_ago = utcnow() - timedelta(seconds=settings.queued_timeout_s + 1)
    result = session.execute(
        update(Post)
        .where(Post.id.in_(post_ids), Post.status == PostStatus.QUEUED)
        .values(queued_at=long_ago)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


def commit_and_hand_over(
    session: Session, posts: list[Claimed], hand_over: Callable[[list[Claimed]], None]
) -> None:
    """Commit the claim of ``posts`` (the dispatcher's batch, the sweep's lost posts), hand
    them over (send their messages) and confirm the sends (:func:`confirm_sent`)."""
    session.commit()
    if posts:
        hand_over(posts)
        confirm_sent(session, [post.post_id for post in posts])
        session.commit()


def dispatch_due_posts(
    session: Session, settings: Settings, hand_over: Callable[[list[Claimed]], None]
) -> int:
    """One tick: claim due posts batch after batch, each committed, handed over (sent to the
    workers) and then confirmed sent (:func:`confirm_sent`), while a batch comes back full and
    within ``dispatch_interval_s`` (the next tick takes over from there). The backpressure
    bound ends it too: a claim without room returns nothing. Returns how many posts were handed
    over."""
    started = time.monotonic()
    total = 0
    while True:
        claimed = claim_due_posts(session, settings)
        commit_and_hand_over(session, claimed, hand_over)
        total += len(claimed)
        if (
            len(claimed) < settings.dispatch_batch_size
            or time.monotonic() - started >= settings.dispatch_interval_s
        ):
            return total


def in_turns(claimed: list[Claimed]) -> list[Claimed]:
    """``claimed`` in the order to send it: each workspace's first post (oldest first), then
    each one's second, and so on. The broker's queue is first in, first out, so a workspace
    with one post due waits behind one post of each other workspace, not a whole batch."""
    by_workspace: dict[uuid.UUID, list[Claimed]] = {}
    for post in sorted(claimed, key=lambda c: c.countdown(_EPOCH)):
        by_workspace.setdefault(post.workspace_id, []).append(post)
    rounds = zip_longest(*by_workspace.values())
    return [post for round_ in rounds for post in round_ if post is not None]


def in_messages(posts: list[Claimed], *, most: int, spread: int) -> list[list[Claimed]]:
    """``posts`` (in the order to send them) as the messages to send them in: one each, unless
    at least twice ``spread`` are due now. Then the posts due now go several to a message
    (``herald.posts.publish_many``): as many as gives at least ``spread`` messages, at most
    ``most``, and only posts of one network together, so a slow network's calls hold up only
    its own posts. A post due later (claimed ahead of its time, sent with a countdown) is
    always a message of its own. Each message stands where its first post stood, so the turns
    of :func:`in_turns` hold."""
    now = utcnow()
    due = [post.countdown(now) == 0 for post in posts]
    size = min(most, sum(due) // max(spread, 1))
    if size < 2:
        return [[post] for post in posts]
    messages: list[list[Claimed]] = []
    filling: dict[str | None, list[Claimed]] = {}
    for post, now_due in zip(posts, due, strict=True):
        if not now_due:
            messages.append([post])
            continue
        message = filling.setdefault(post.provider, [])
        if not message:
            messages.append(message)  # its place: where its first post stood
        message.append(post)
        if len(message) == size:
            del filling[post.provider]
    return messages


#: The default lookahead, in ticks: more than one, so a tick that runs late (a claim and its
#: sends take time, beat's clock drifts) still finds every post due before the next one.
LOOKAHEAD_TICKS = 1.5


def lookahead_s(settings: Settings) -> float:
    """How far ahead of ``scheduled_at`` a post is claimed (one and a half beat ticks unless
    set)."""
    if settings.dispatch_lookahead_s is None:
        return settings.dispatch_interval_s * LOOKAHEAD_TICKS
    return settings.dispatch_lookahead_s


def _provider_rooms(session: Session, settings: Settings, now: datetime) -> dict[str, int]:
    """How many more posts each capped or circuit-held provider may have queued now (a
    provider not named has no bound)."""
    caps = settings.provider_concurrency
    rooms: dict[str, int] = {}
    if caps:
        in_flight = dict(
            session.execute(
                select(Integration.provider, func.count())
                .select_from(Post)
                .join(Integration, Integration.id == Post.integration_id)
                .where(Post.status.in_(IN_FLIGHT), Integration.provider.in_(list(caps)))
                .group_by(Integration.provider)
            )
            .tuples()
            .all()
        )
        rooms = {
            provider: max(0, cap - in_flight.get(provider, 0)) for provider, cap in caps.items()
        }
    circuits = circuit.gate(session, settings, now)
    for provider in circuits.held:
        probes = circuits.probes.get(provider, 0)
        rooms[provider] = min(rooms.get(provider, probes), probes)
    return rooms


def _chosen(
    now: datetime, horizon: datetime, rooms: dict[str, int], batch: int
) -> Select[tuple[uuid.UUID]]:
    """The ids of up to ``batch`` posts to claim, ranked as the module docstring says."""
    due_at = func.coalesce(Post.next_attempt_at, Post.scheduled_at)
    due = (
        select(
            Post.id.label("id"),
            Post.workspace_id.label("workspace_id"),
            Integration.provider.label("provider"),
            due_at.label("due_at"),
            func.row_number()
            .over(partition_by=Post.workspace_id, order_by=(due_at, Post.id))
            .label("turn"),
        )
        .join(Integration, Integration.id == Post.integration_id)
        .where(
            or_(
                and_(Post.status == PostStatus.SCHEDULED, Post.scheduled_at <= horizon),
                and_(
                    Post.status == PostStatus.RETRYING,
                    Post.next_attempt_at <= now,
                    # Whatever made it due, never handed over before its time.
                    Post.scheduled_at <= horizon,
                ),
            ),
            # Disconnected, its workspace deleted, cut off until the user reconnects
            # (herald.reauth), paused by a rate limit, mid-refresh (herald.tokens.lease): its
            # posts wait, none fails.
            handing_over(now),
        )
    )
    full = [provider for provider, room in rooms.items() if room <= 0]
    if full:
        due = due.where(Integration.provider.not_in(full))
    ranked = due.subquery("due")
    bounded = {provider: n for provider, n in rooms.items() if n > 0}
    room: ColumnElement[int] = (
        case(bounded, value=ranked.c.provider, else_=literal(batch)) if bounded else literal(batch)
    )
    within = select(
        ranked.c.id,
        ranked.c.turn,
        ranked.c.due_at,
        func.row_number()
        .over(partition_by=ranked.c.provider, order_by=(ranked.c.turn, ranked.c.due_at))
        .label("place"),
        room.label("room"),
    ).subquery("within")
    return (
        select(within.c.id)
        .where(within.c.place <= within.c.room)
        .order_by(within.c.turn, within.c.due_at)
        .limit(batch)
    )
