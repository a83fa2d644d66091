"""The publish path's common case in two statements (Postgres).

Most runs of ``herald.posts.publish`` find the post due, its integration healthy, its
network's circuit closed, and end with the network's yes. The general path
(:mod:`.publisher`: read, preflight, claim, record) spends about a dozen round trips on that;
here it is two, each a single data-modifying statement committed on its own (the run's
connection is in autocommit, :func:`herald.db.autocommit`, so there is no ``BEGIN`` or
``COMMIT`` to wait for and no transaction is held open across the network call):

- :func:`claim_ready`: ``queued|retrying → publishing`` and the attempt row, only if every
  check of the preflight passes in the same statement (due, and a ``retrying`` post's next
  attempt due (:func:`claimable`), integration neither waiting for
  its user nor disabled nor paused by a rate limit, an adapter already built for its network in
  this process, the network's circuit closed); the post and the integration come back with it;
- :func:`record_published`: ``publishing → published`` (while the post is still this
  attempt's), the attempt finished, and a webhook delivery queued for each subscription of the
  workspace that listens (the outbox row commits with the status it reports, as
  :func:`herald.models.record_event` would); it says whether the move won and whether the
  network's circuit is still closed.

Anything else takes the general path, which decides exactly as before: a claim that matched
nothing (not due, claimed by another run, needs_reauth, circuit open, an unknown or first-seen
provider...) is read and judged there; an answer other than "published" is recorded there.
Each statement is atomic, so a crash between them leaves what the general path leaves: a post in
``publishing`` with an open attempt, for the sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ARRAY,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import QueryableAttribute, instance_state
from sqlalchemy.sql.elements import ColumnElement

from herald import db
from herald.models import (
    CircuitState,
    Integration,
    Post,
    PostStatus,
    ProviderCircuit,
    PublishAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from herald.models.integration import HEALTHY
from herald.models.webhook import DeliveryStatus, SubscriptionStatus, event_body
from herald.providers.base import PublishResult

P = cast(Table, Post.__table__)
I = cast(Table, Integration.__table__)  # noqa: E741 - the integrations table, beside P, A, C
A = cast(Table, PublishAttempt.__table__)
C = cast(Table, ProviderCircuit.__table__)
S = cast(Table, WebhookSubscription.__table__)
D = cast(Table, WebhookDelivery.__table__)

T = TypeVar("T")
#: The attempt columns an open attempt has no value for yet.
OPEN_ATTEMPT = (
    "finished_at",
    "latency_ms",
    "outcome",
    "error_code",
    "error_message",
    "http_status",
    "provider_request_id",
)
_NETWORK = "network"  # the integration's provider, as the claim's UPDATE returns it
PUBLISHED_EVENT = "post.published"


@dataclass(frozen=True, slots=True)
class Ready:
    """A post claimed by :func:`claim_ready`: its rows as they were claimed, and its attempt
    (detached objects: nothing is loaded from or flushed to the session for them)."""

    post: Post
    integration: Integration
    attempt: PublishAttempt


def claim_ready(
    session: Session,
    post_id: uuid.UUID,
    *,
    now: datetime,
    providers: tuple[str, ...],
    circuit_enabled: bool,
    attempt: dict[str, Any],
) -> Ready | None:
    """Claim ``post_id`` in one statement if nothing stands in its way; None otherwise (and
    always where the session cannot run in autocommit: SQLite, a transaction under way, a
    tenant scope), leaving the session with no transaction so the general path starts afresh.

    ``providers`` are the networks whose adapter this process has built (a network seen for the
    first time goes through the preflight once); ``attempt`` holds the attempt row's own values
    (``id``, ``correlation_id`` — the post's when None —, ``trace_id``, ``task_id``, ``worker``,
    ``process_ns``).
    """
    if not providers or not db.autocommit(session):
        return None
    row = session.execute(
        _claim_statement(circuit_enabled),
        {"p_post_id": post_id, "p_now": now, "p_providers": list(providers)}
        | {"p_" + key: value for key, value in attempt.items()},
    ).first()
    if row is None:
        session.commit()  # ends the autocommit transaction: the general path begins its own
        return None
    # The row holds the post's columns, then the integration's, in table order.
    split = len(P.c)
    post = _detached(Post, dict(zip(P.c.keys(), row[:split], strict=True)))
    integration = _detached(Integration, dict(zip(I.c.keys(), row[split:], strict=True)))
    opened = _detached(
        PublishAttempt,
        {
            "id": attempt["id"],
            "workspace_id": post.workspace_id,
            "post_id": post.id,
            "provider": integration.provider,
            "attempt_number": post.attempts,
            "started_at": now,
            "correlation_id": (
                post.correlation_id
                if attempt["correlation_id"] is None
                else attempt["correlation_id"]
            ),  # as the statement's COALESCE
            "trace_id": attempt["trace_id"],
            "task_id": attempt["task_id"],
            "worker": attempt["worker"],
            "process_ns": attempt["process_ns"],
            **dict.fromkeys(OPEN_ATTEMPT),
        },
    )
    return Ready(post, integration, opened)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :func:`record_published` did: whether the post's move won, and whether the
    network's circuit was closed (if not, the caller lets the circuit observe the answer)."""

    won: bool
    circuit_closed: bool


def record_published(
    session: Session,
    ready: Ready,
    result: PublishResult,
    *,
    finished_at: datetime,
    latency_ms: int,
) -> Recorded:
    """Record a published answer in one statement (see the module docstring)."""
    post, integration = ready.post, ready.integration
    data = {
        "post_id": str(post.id),
        "integration_id": str(integration.id),
        "status": PostStatus.PUBLISHED.value,
        "correlation_id": post.correlation_id,
        "external_id": result.external_id,
        "url": result.url,
    }
    row = session.execute(
        _published_statement(),
        {
            "p_post_id": post.id,
            "p_attempt_id": ready.attempt.id,
            "p_attempt_number": ready.attempt.attempt_number,
            "p_now": finished_at,
            "p_external_id": result.external_id,
            "p_external_url": result.url,
            "p_request_id": result.request_id,
            "p_latency_ms": latency_ms,
            "p_provider": integration.provider,
            "p_body": event_body(PUBLISHED_EVENT, post.workspace_id, data, finished_at),
        },
    ).one()
    return Recorded(won=bool(row.won), circuit_closed=not row.circuit_open)


# -- the statements, built once per process ------------------------------------------------------


@cache
def _claim_statement(circuit_enabled: bool) -> Select[Any]:
    now = bindparam("p_now", type_=P.c.updated_at.type)
    conditions = [
        P.c.id == bindparam("p_post_id", type_=P.c.id.type),
        claimable(P.c.status, P.c.next_attempt_at, now),
        P.c.scheduled_at <= now,
        I.c.id == P.c.integration_id,
        _one_of(I.c.status, HEALTHY),
        (I.c.rate_limited_until.is_(None)) | (I.c.rate_limited_until <= now),
        I.c.provider == func.any(bindparam("p_providers", type_=ARRAY(String))),
    ]
    if circuit_enabled:
        conditions.append(
            ~exists().where(C.c.provider == I.c.provider, C.c.state != CircuitState.CLOSED)
        )
    claimed = (
        update(P)
        .where(*conditions)
        .values(
            status=PostStatus.PUBLISHING,
            updated_at=now,
            attempts=P.c.attempts + 1,
            publishing_started_at=now,
            next_attempt_at=None,
            resolve_attempts=0,
            resolve_after=None,
        )
        .returning(*P.c, I.c.provider.label(_NETWORK))
        .cte("claimed")
    )
    attempt = (
        insert(A)
        .from_select(
            [
                A.c.id,
                A.c.workspace_id,
                A.c.post_id,
                A.c.provider,
                A.c.attempt_number,
                A.c.started_at,
                A.c.correlation_id,
                A.c.trace_id,
                A.c.task_id,
                A.c.worker,
                A.c.process_ns,
            ],
            select(
                bindparam("p_id", type_=A.c.id.type),
                claimed.c.workspace_id,
                claimed.c.id,
                claimed.c[_NETWORK],
                claimed.c.attempts,
                now,
                func.coalesce(
                    bindparam("p_correlation_id", type_=A.c.correlation_id.type),
                    claimed.c.correlation_id,
                ),
                bindparam("p_trace_id", type_=A.c.trace_id.type),
                bindparam("p_task_id", type_=A.c.task_id.type),
                bindparam("p_worker", type_=A.c.worker.type),
                bindparam("p_process_ns", type_=A.c.process_ns.type),
            ).select_from(claimed),
        )
        .returning(A.c.id)
        .cte("attempt")
    )
    # The integration is read by the outer SELECT (same snapshot as the UPDATE's checks) rather
    # than returned by the UPDATE: the statement stays under psycopg's 4,096 characters, so its
    # conversion is cached and it is prepared on the server after a few runs.
    return (
        select(*(claimed.c[c.name] for c in P.c), *I.c)
        .join_from(claimed, I, I.c.id == claimed.c.integration_id)
        .add_cte(attempt)
    )


@cache
def _published_statement() -> Select[Any]:
    now = bindparam("p_now", type_=P.c.updated_at.type)
    settled = (
        update(P)
        .where(
            P.c.id == bindparam("p_post_id", type_=P.c.id.type),
            P.c.status == PostStatus.PUBLISHING,
            P.c.attempts == bindparam("p_attempt_number", type_=P.c.attempts.type),
        )
        .values(
            status=PostStatus.PUBLISHED,
            updated_at=now,
            external_id=bindparam("p_external_id", type_=P.c.external_id.type),
            external_url=bindparam("p_external_url", type_=P.c.external_url.type),
            published_at=now,
            last_error_code=None,
            last_error_message=None,
        )
        .returning(P.c.id, P.c.workspace_id)
        .cte("settled")
    )
    finished = (
        update(A)
        .where(A.c.id == bindparam("p_attempt_id", type_=A.c.id.type))
        .values(
            finished_at=now,
            latency_ms=bindparam("p_latency_ms", type_=A.c.latency_ms.type),
            outcome="published",
            provider_request_id=bindparam("p_request_id", type_=A.c.provider_request_id.type),
            error_code=None,
            error_message=None,
        )
        .returning(A.c.id)
        .cte("finished")
    )
    # One delivery id per listening subscription, made once (materialised: the id is both the
    # row's key and the body's "id").
    listeners = (
        select(
            func.gen_random_uuid().label("id"),
            S.c.id.label("subscription_id"),
            settled.c.workspace_id,
        )
        .join_from(settled, S, S.c.workspace_id == settled.c.workspace_id)
        .where(
            S.c.status == SubscriptionStatus.ACTIVE,
            type_coerce(S.c.events, JSONB).contains([PUBLISHED_EVENT]),
        )
        .cte("listeners")
        .prefix_with("MATERIALIZED")
    )
    told = (
        insert(D)
        .from_select(
            [
                D.c.id,
                D.c.workspace_id,
                D.c.subscription_id,
                D.c.event,
                D.c.payload,
                D.c.status,
                D.c.attempts,
                D.c.created_at,
                D.c.next_attempt_at,
            ],
            select(
                listeners.c.id,
                listeners.c.workspace_id,
                listeners.c.subscription_id,
                literal(PUBLISHED_EVENT, D.c.event.type),
                bindparam("p_body", type_=JSONB).op("||")(
                    func.jsonb_build_object("id", sql_cast(listeners.c.id, Text))
                ),
                literal(DeliveryStatus.PENDING, D.c.status.type),
                literal(0),
                now,
                now,
            ),
        )
        .returning(D.c.id)
        .cte("told")
    )
    circuit_open = exists().where(
        C.c.provider == bindparam("p_provider", type_=C.c.provider.type),
        C.c.state != CircuitState.CLOSED,
    )
    return select(
        select(func.count()).select_from(settled).scalar_subquery().label("won"),
        circuit_open.label("circuit_open"),
    ).add_cte(finished, told)


def claimable(
    status: ColumnElement[Any] | QueryableAttribute[Any],
    next_attempt_at: ColumnElement[Any] | QueryableAttribute[Any],
    now: Any,
) -> ColumnElement[bool]:
    """A post a publish run may claim: ``queued``, or ``retrying`` with its next attempt due. A
    ``retrying`` post in its backoff, or waiting with no next attempt (for its user), is the
    dispatcher's to hand over when due: a stray message (a redelivery, the sweep's resend, a
    producer's) must not spend an attempt on it early."""
    return or_(
        status == PostStatus.QUEUED,
        and_(status == PostStatus.RETRYING, next_attempt_at <= now),
    )


def _one_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)`` as ORs of equalities: an ``IN`` list is an expanding parameter,
    which SQLAlchemy renders into the statement's text again on every execution (about 20 us
    of the claim's CPU)."""
    return or_(*(column == value for value in values))


def _detached(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of a mapped class with every column set, as a detached row: usable without
    the session, and added to it (persistent, nothing to load) if the general path writes it."""
    # Filled the way the ORM fills a loaded row (the instance's dict, no attribute events):
    # about six times cheaper than the constructor on the hot path.
    instance: T = class_mapper(cls).class_manager.new_instance()
    instance_state(instance).dict.update(values)
    make_transient_to_detached(instance)
    return instance
