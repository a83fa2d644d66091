"""Before the network is called: may this post be tried now, and claim it (DESIGN.md §3).

- :func:`preflight` judges a post read from the database: its integration needs its user, is
  paused by a rate limit, has no adapter or configuration, or its network's circuit is open;
  such a post is settled here (waiting or failed) without spending an attempt.
- :func:`claim` moves ``queued|retrying → publishing`` and writes the attempt row, committed
  before any call, so a crash afterwards leaves evidence the sweep can act on; it loses to any
  other run or edit that got there first.
- :func:`claim_if_ready` is both in one statement for the common case (:mod:`.fastpath`).

:mod:`.publisher` runs what was claimed and records its outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import insert, literal, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.sql.elements import ColumnElement

from herald import reauth
from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    PublishAttempt,
    utcnow,
)
from herald.providers.base import Provider
from herald.providers.registry import UnknownProvider, built_for, provider_for
from herald.publishing import circuit, fastpath
from herald.publishing.transitions import lost, move
from herald.settings import ProviderNotConfigured, Settings
from herald.telemetry import context


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one publish run did. ``refresh`` asks the caller to send a refresh of that
    integration, naming ``seen_token_version`` (the tokens the network refused); the post waits
    in ``retrying`` until the refresh makes it due."""

    status: PostStatus | None
    kind: str
    refresh: uuid.UUID | None = None
    seen_token_version: int | None = None
    #: A post handed over ahead of its ``scheduled_at`` that arrived early: send it then.
    not_before: datetime | None = None


NOT_MINE = Outcome(None, "not_claimed")
DUE_OR_QUEUED = (PostStatus.QUEUED, PostStatus.RETRYING)


def claim_if_ready(
    session: Session, post_id: uuid.UUID, settings: Settings, *, task_id: str | None
) -> fastpath.Ready | None:
    """The common case's claim, in one statement (:func:`.fastpath.claim_ready`); None when
    anything stands in the way, for :func:`preflight` and :func:`claim` to judge."""
    return fastpath.claim_ready(
        session,
        post_id,
        now=utcnow(),
        providers=built_for(settings),
        circuit_enabled=settings.circuit_enabled,
        attempt={
            "id": uuid.uuid4(),
            "correlation_id": context.correlation_id(),
            "trace_id": trace_id(),
            "task_id": task_id,
            "worker": context.process_name(),
            "process_ns": context.PID_NAMESPACE,
        },
    )


def preflight(
    session: Session, post: Post, integration: Integration, settings: Settings
) -> Provider | Outcome:
    """The adapter to publish with, or the outcome for a post that cannot be tried now
    (its integration needs the user, is paused by a rate limit, has no adapter or no
    configuration, or its network is failing for everyone)."""
    unavailable = _needs_user(session, post, integration)
    if unavailable is not None:
        return unavailable
    if integration.rate_limited_until and integration.rate_limited_until > utcnow():
        # Paced: wait for the provider's reset without spending an attempt.
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.RETRYING,
            kind="paused",
            next_attempt_at=integration.rate_limited_until,
        )
    try:
        provider = provider_for(integration.provider, settings)
    except UnknownProvider:
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.FAILED,
            kind="provider_unsupported",
            last_error_code="provider_unsupported",
            last_error_message=f"no adapter for provider {integration.provider!r}",
        )
    except ProviderNotConfigured as exc:
        # Herald's configuration, not the post: fail it with the reason rather than loop.
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.FAILED,
            kind="provider_misconfigured",
            last_error_code="provider_misconfigured",
            last_error_message=str(exc),
        )
    wait_until = circuit.admit(session, integration.provider, settings, utcnow())
    if wait_until is not None:
        # The network fails for everyone: wait for its probe without spending an attempt.
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.RETRYING,
            kind="circuit_open",
            next_attempt_at=wait_until,
            last_error_code=circuit.WAITING_CODE,
            last_error_message=f"{integration.provider} is failing for every account; "
            f"waiting for its circuit to close (next probe {wait_until.isoformat()})",
        )
    return provider


def _needs_user(session: Session, post: Post, integration: Integration) -> Outcome | None:
    """A post of an integration that needs its user: it waits (``needs_reauth``: publishing
    resumes after a reconnect) or fails naming why (``disabled``)."""
    if integration.status is IntegrationStatus.NEEDS_REAUTH:
        # Queued before its grant was found dead: it waits for the user with the others.
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.RETRYING,
            kind="needs_reauth",
            next_attempt_at=None,
            last_error_code=reauth.WAITING_CODE,
            last_error_message=reauth.WAITING_MESSAGE,
        )
    if integration.status is IntegrationStatus.DISABLED:
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.FAILED,
            kind="integration_unavailable",
            last_error_code="integration_" + integration.status.value,
            last_error_message=f"the integration is {integration.status.value}; reconnect it",
        )
    return None


def _settle_unclaimed(
    session: Session, post: Post, *, to: PostStatus, kind: str, **values: Any
) -> Outcome:
    sources = (PostStatus.QUEUED,) if to is PostStatus.RETRYING else DUE_OR_QUEUED
    won = move(session, post.id, from_=sources, to=to, site="preflight", **values)
    session.commit()
    return Outcome(to, kind) if won else NOT_MINE


def claim(
    session: Session, post: Post, integration: Integration, *, task_id: str | None
) -> PublishAttempt | None:
    """Move the post to ``publishing`` and write its attempt row, durably, before any call to
    the network; None if another run claimed it first. A post is never claimed before its
    ``scheduled_at`` (the dispatcher hands some over early, with a countdown)."""
    now = utcnow()
    attempt_number = post.attempts + 1
    moved: dict[str, Any] = {
        "attempts": attempt_number,
        "publishing_started_at": now,
        "next_attempt_at": None,
        "resolve_attempts": 0,
        "resolve_after": None,
    }
    attempt = PublishAttempt(
        id=uuid.uuid4(),
        workspace_id=post.workspace_id,
        post_id=post.id,
        provider=integration.provider,
        attempt_number=attempt_number,
        started_at=now,
        correlation_id=context.correlation_id() or post.correlation_id,
        trace_id=trace_id(),
        task_id=task_id,
        worker=context.process_name(),
        process_ns=context.PID_NAMESPACE,
        # Every column given, so the row attached below is complete (nothing to load).
        **dict.fromkeys(fastpath.OPEN_ATTEMPT),
    )
    due = (
        Post.scheduled_at <= now,
        fastpath.claimable(Post.status, Post.next_attempt_at, now),
        # The version this run read: an edit accepted since is never published in its old form.
        Post.version == post.version,
    )
    if session.get_bind().dialect.name == "postgresql":
        # One round trip: the conditional move and the attempt row in one statement.
        won = _claim_with_attempt(session, attempt, due=due, now=now, moved=moved)
        if won:
            make_transient_to_detached(attempt)
            session.add(attempt)
        else:
            lost(session, post.id, from_=DUE_OR_QUEUED, to=PostStatus.PUBLISHING, site="claim")
    else:
        won = move(
            session,
            post.id,
            from_=DUE_OR_QUEUED,
            to=PostStatus.PUBLISHING,
            site="claim",
            only_if=due,
            **moved,
        )
        if won:
            session.add(attempt)
    if not won:
        session.rollback()
        return None
    session.commit()
    return attempt


_ATTEMPT_COLUMNS = (
    "id",
    "workspace_id",
    "post_id",
    "provider",
    "attempt_number",
    "started_at",
    "correlation_id",
    "trace_id",
    "task_id",
    "worker",
    "process_ns",
)


def _claim_with_attempt(
    session: Session,
    attempt: PublishAttempt,
    *,
    due: tuple[ColumnElement[bool], ...],
    now: datetime,
    moved: dict[str, Any],
) -> bool:
    """``queued|retrying → publishing`` and the attempt's INSERT as one data-modifying CTE
    (Postgres): the row is written only if the move won. Whether it did."""
    claimed = (
        update(Post)
        .where(Post.id == attempt.post_id, Post.status.in_(DUE_OR_QUEUED), *due)
        .values(status=PostStatus.PUBLISHING, updated_at=now, **moved)
        .returning(Post.id)
        .cte("claimed")
    )
    columns = PublishAttempt.__table__.c
    row = select(
        *(
            claimed.c.id
            if name == "post_id"
            else literal(getattr(attempt, name), columns[name].type)
            for name in _ATTEMPT_COLUMNS
        )
    ).select_from(claimed)
    result = session.execute(
        insert(PublishAttempt)
        .from_select(list(_ATTEMPT_COLUMNS), row)
        .returning(PublishAttempt.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


def trace_id() -> str | None:
    """The running span's trace id, as the attempt row stores it."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
