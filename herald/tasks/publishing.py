"""Publishing tasks: thin Celery bindings of :mod:`herald.publishing`.

| task                        | queue   | payload                         |
| --------------------------- | ------- | ------------------------------- |
| ``herald.posts.schedule``   | default | :class:`SchedulePost`           |
| ``herald.posts.reschedule`` | default | :class:`ReschedulePost`         |
| ``herald.posts.cancel``     | default | :class:`CancelPost`             |
| ``herald.posts.dispatch_due`` | default | none (beat)                   |
| ``herald.posts.publish``    | publish | :class:`PublishPost`            |
| ``herald.posts.publish_many`` | publish | :class:`PublishPosts`         |
| ``herald.posts.record_outcome`` | publish | :class:`RecordOutcome` (internal) |
| ``herald.posts.reconcile_lost`` | publish | :class:`ReconcileLost` (internal) |
| ``herald.posts.sweep_stuck`` | sweep | none (beat)                      |
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from functools import partial
from typing import Any

import structlog
from celery import signals
from celery.canvas import Signature
from celery.exceptions import SoftTimeLimitExceeded
from kombu import Producer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.broker import restarts
from herald.broker.redis import restore_held
from herald.broker.topology import deliverable_countdown
from herald.celery_app import app, broker_connection
from herald.contracts import (
    PUBLISH_MANY_MAX,
    CancelPost,
    NoArguments,
    PostToPublish,
    PublishPost,
    PublishPosts,
    ReconcileLost,
    RecordOutcome,
    ReschedulePost,
    SchedulePost,
)
from herald.models import utcnow
from herald.publishing import editing
from herald.publishing.claiming import Outcome
from herald.publishing.dispatch import (
    Claimed,
    commit_and_hand_over,
    confirm_sent,
    dispatch_due_posts,
    in_messages,
    mark_unsent,
)
from herald.publishing.publisher import publish_post, record_answer
from herald.publishing.recording import OutcomeNotRecorded
from herald.publishing.scheduling import SchedulingError, schedule_post
from herald.publishing.sweep import (
    orphaned_attempts,
    requeue_lost,
    resolve_dead_workers,
    resolve_lost_process,
)
from herald.security.crypto import KeyRing
from herald.settings import Settings, broker_kind, get_settings
from herald.tasks.base import HeraldTask, RecentCounts, RetryPolicy
from herald.telemetry import context
from herald.telemetry.errors import describe_error
from herald.telemetry.tracing import TraceContext, in_post_trace, trace_columns

log = structlog.get_logger("herald.tasks")

# A database that is briefly away is worth waiting for; everything else is decided in the
# body and recorded on the post.
DB_BLIPS = RetryPolicy(retry_on=(OperationalError,), max_retries=5, backoff_s=1.0)
# Recording an answer the network already gave waits for the database much longer (about ten
# minutes): the answer exists nowhere else.
RECORDING = RetryPolicy(
    retry_on=(OperationalError, OutcomeNotRecorded),
    max_retries=20,
    backoff_s=2.0,
    backoff_max_s=60.0,
)


def _keys() -> KeyRing:
    return KeyRing.from_settings(get_settings())


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.schedule",
    payload_model=SchedulePost,
    retry_policy=DB_BLIPS,
    producer_request=True,
)
def schedule(self: HeraldTask, payload: SchedulePost) -> dict[str, Any]:
    try:
        post, created = schedule_post(
            self.session, payload, get_settings(), correlation_id=context.correlation_id()
        )
    except SchedulingError as exc:
        # The payload was well-formed but cannot be honoured: refuse it like a bad payload.
        self._reject(f"{exc.code}: {exc.message}", payload.model_dump(mode="json"))
    return {"post_id": str(post.id), "created": created}


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.reschedule",
    payload_model=ReschedulePost,
    retry_policy=DB_BLIPS,
    producer_request=True,
)
def reschedule(self: HeraldTask, payload: ReschedulePost) -> dict[str, Any]:
    """Edit or move a post that is not publishing yet, as ``PATCH /api/postiz/posts/{id}``."""
    try:
        post = editing.edit_post(
            self.session,
            payload.workspace_id,
            payload.post_id,
            payload,
            get_settings(),
            expected_version=payload.expected_version,
        )
    except SchedulingError as exc:
        # Not possible now (claimed, finished, stale version) or never: refused and recorded.
        self._reject(f"{exc.code}: {exc.message}", payload.model_dump(mode="json"))
    return {"post_id": str(post.id), "version": post.version}


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.cancel",
    payload_model=CancelPost,
    retry_policy=DB_BLIPS,
    producer_request=True,
)
def cancel(self: HeraldTask, payload: CancelPost) -> str:
    """Cancel a post that is not publishing yet, as ``DELETE /api/postiz/posts/{id}``."""
    try:
        post = editing.cancel_post(self.session, payload.workspace_id, payload.post_id)
    except SchedulingError as exc:
        self._reject(f"{exc.code}: {exc.message}", payload.model_dump(mode="json"))
    return post.status.value


def publish_signature(post: Claimed) -> Signature[Any]:
    """``publish`` for one claimed post, continuing the correlation the post was scheduled
    under (the request or the other service that created it), not the beat tick's."""
    return _publish_at(post.post_id, str(post.workspace_id), post.correlation_id, post.countdown())


def _publish_at(
    post_id: uuid.UUID, workspace_id: str | None, correlation_id: str | None, countdown: float
) -> Signature[Any]:
    headers = {context.WORKSPACE_HEADER: workspace_id} if workspace_id else {}
    if correlation_id:
        headers[context.CORRELATION_HEADER] = correlation_id
    options: dict[str, Any] = {"headers": headers}
    if countdown > 0:  # a post claimed ahead of its time (herald.publishing.dispatch)
        options["countdown"] = deliverable_countdown(countdown, app.amqp.queues.values())
    return publish.signature(kwargs={"post_id": str(post_id)}, **options)


def send_publish(post: Claimed, producer: Producer | None = None) -> None:
    """Send ``publish`` for one claimed post inside the post's own trace and correlation
    (through ``producer`` when given, else one from the app's pool).

    The span running now (the dispatcher's tick, the sweep) serves many posts: it becomes a
    link of the post's ``herald.dispatch_post`` span, not the parent of its publish. The Celery
    instrumentation carries that span's context in the message, so the attempt, its database
    and HTTP calls, and any refresh it causes land in the post's trace.
    """
    with in_post_trace(
        "herald.dispatch_post",
        post_id=str(post.post_id),
        correlation_id=post.correlation_id,
        workspace_id=str(post.workspace_id),
        stored=post.trace,
    ):
        publish_signature(post).apply_async(producer=producer)


def publish_many_signature(posts: list[PostToPublish]) -> Signature[Any]:
    """``publish_many`` for ``posts``. Each post carries its own correlation, workspace and
    trace context; the message has none of its own (its run is correlated by its task id)."""
    return publish_many.signature(
        kwargs={"posts": [post.model_dump(mode="json", exclude_none=True) for post in posts]}
    )


def to_publish(post: Claimed) -> PostToPublish:
    """The entry of ``post`` in a ``publish_many`` message. A stored correlation id or trace
    context the contract would refuse is left out (the post is still sent)."""
    entry = {"post_id": post.post_id, "workspace_id": post.workspace_id}
    try:
        return PostToPublish.model_validate(
            entry | {"correlation_id": post.correlation_id, **trace_columns(post.trace)}
        )
    except ValidationError:
        return PostToPublish.model_validate(entry)


def publish_messages(
    posts: list[Claimed], *, together: bool = True, settings: Settings | None = None
) -> list[tuple[list[Claimed], Signature[Any]]]:
    """The messages that publish the claimed ``posts``, in the order to send them, each with
    the posts it carries: ``publish`` for each, or, when many are due at once and ``together``
    holds, ``publish_many`` for several of one network
    (:func:`herald.publishing.dispatch.in_messages`)."""
    settings = settings or get_settings()
    messages = (
        in_messages(posts, most=settings.publish_many_max, spread=settings.publish_many_spread)
        if together
        else [[post] for post in posts]
    )
    return [
        (
            message,
            publish_signature(message[0])
            if len(message) == 1
            else publish_many_signature([to_publish(post) for post in message]),
        )
        for message in messages
    ]


def send_claimed(
    posts: list[Claimed],
    producer: Producer | None = None,
    *,
    together: bool = True,
    settings: Settings | None = None,
) -> None:
    """Send the messages of the claimed ``posts`` (the dispatcher's batch, the sweep's
    requeued posts; :func:`publish_messages`), through one producer. A single post's is sent
    inside its own trace (:func:`send_publish`).

    The caller confirms the sends once this returns (:func:`.dispatch.confirm_sent`). If the
    broker fails (kombu gave up its retries: a restart, an outage), the posts sent so far are
    confirmed here and the others go to the sweep's next run (:func:`.dispatch.mark_unsent`),
    and the error is raised on.
    """
    sent: list[Claimed] = []
    try:
        with app.producer_or_acquire(producer) as batch_producer:
            for message, signature in publish_messages(posts, together=together, settings=settings):
                if len(message) == 1:
                    send_publish(message[0], batch_producer)
                else:
                    signature.apply_async(producer=batch_producer)
                sent.extend(message)
    except Exception as exc:
        sent_ids = [post.post_id for post in sent]
        unsent = [post.post_id for post in posts if post.post_id not in set(sent_ids)]
        _hand_to_the_sweep(sent_ids, unsent, exc)
        raise


def _hand_to_the_sweep(sent: list[uuid.UUID], unsent: list[uuid.UUID], exc: Exception) -> None:
    """The broker failed a send: confirm the posts ``sent`` and mark the ``unsent`` ones for
    the sweep's next run (:func:`.dispatch.mark_unsent`)."""
    error_type, error = describe_error(exc)
    try:
        with db.session_scope() as session:
            confirm_sent(session, sent)
            marked = mark_unsent(session, get_settings(), unsent)
    except Exception as failure:  # the database away too: the queued timeout still applies
        log.error(
            "dispatch.unsent_unmarked",
            count=len(unsent),
            error_type=error_type,
            error=error,
            mark_error=describe_error(failure)[1],
        )
        return
    log.warning("dispatch.unsent", count=marked, error_type=error_type, error=error)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.dispatch_due",
    scope="service",
    payload_model=NoArguments,
    periodic=True,
)
def dispatch_due(self: HeraldTask, payload: NoArguments) -> int:
    count = dispatch_due_posts(self.session, get_settings(), send_claimed)
    if count:
        log.info("dispatch.claimed", count=count)
    return count


def _fail_revoked(task: HeraldTask, payload: PublishPost, task_id: str) -> None:
    """``publish``'s :meth:`HeraldTask.on_revoked`: an operator revoked this post's message."""
    with db.session_scope() as session:
        db.service_scope(session, "publish_revoked")
        editing.fail_revoked(session, payload.post_id, task_id)


def _reconcile_lost(task: HeraldTask, payload: PublishPost, process: str) -> None:
    """``publish``'s :meth:`HeraldTask.on_process_lost`: the pool process publishing this post
    died, perhaps mid-call. Resolve the post soon rather than after
    ``HERALD_PUBLISHING_TIMEOUT_S``."""
    _reconcile_lost_post(payload.post_id, process)


def _reconcile_lost_post(post_id: uuid.UUID, process: str) -> None:
    wait = _reconcile_soon(post_id, process)
    log.warning("publish.process_lost", post_id=str(post_id), resolve_in_s=wait)


def _reconcile_soon(post_id: uuid.UUID, process: str) -> float:
    """Send ``herald.posts.reconcile_lost`` for ``post_id``, whose publishing ``process`` died,
    to run once one call's timeout has passed: a request the process sent just before it died
    may still be in the network's hands until then. Returns that wait."""
    settings = get_settings()
    one_call = settings.provider_connect_timeout_s + settings.provider_timeout_s
    wait = deliverable_countdown(one_call, app.amqp.queues.values())
    reconcile_lost.apply_async(kwargs={"post_id": str(post_id), "process": process}, countdown=wait)
    return wait


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.publish",
    scope="service",
    payload_model=PublishPost,
    retry_policy=DB_BLIPS,
    log_success=False,
    on_revoked=_fail_revoked,
    on_process_lost=_reconcile_lost,
)
def publish(self: HeraldTask, payload: PublishPost) -> str | None:
    return _publish_one(self, payload.post_id)


def _publish_one(task: HeraldTask, post_id: uuid.UUID) -> str | None:
    """One publish attempt of ``post_id`` in ``task``'s session, and what follows it.

    A run cut by its soft time limit may leave the post ``publishing`` with its attempt open
    (mid-call, or the answer not yet written): it is handed to ``reconcile_lost``, as a dead
    process's would be, rather than left for the sweep's ``HERALD_PUBLISHING_TIMEOUT_S``."""
    try:
        outcome = publish_post(
            task.session, post_id, get_settings(), _keys(), task_id=task.request.id
        )
    except SoftTimeLimitExceeded:
        try:
            wait: float | None = _reconcile_soon(post_id, context.process_name())
        except Exception:  # the broker away too: the sweep's publishing timeout still applies
            wait = None
        log.warning("publish.cut_by_time_limit", post_id=str(post_id), resolve_in_s=wait)
        raise
    except OutcomeNotRecorded as exc:
        # The network answered and the database is away: hand the answer on, to be recorded
        # when it is back. Never publish again. (Sent now: no commit is coming to wait for.)
        log.error("publish.outcome_deferred", post_id=str(post_id), reason=str(exc))
        answer = exc.answer.model_dump(mode="json")
        app.signature("herald.posts.record_outcome", kwargs={"answer": answer}).apply_async(
            countdown=RECORDING.countdown(0)
        )
        return None
    if outcome.not_before is not None:
        ctx = context.current()
        wait = (outcome.not_before - utcnow()).total_seconds()
        task.enqueue(_publish_at(post_id, ctx.workspace_id, ctx.correlation_id, wait))
        log.info("publish.not_due", post_id=str(post_id), wait_s=round(wait, 3))
        return None
    return _settled(task, outcome, post_id)


def many_budget_s(settings: Settings, soft_limit_s: float | None = None) -> float:
    """How long a ``publish_many`` run goes on starting posts: one call's timeouts, and never
    so long that less than that and a margin would be left of its soft time limit
    (``soft_limit_s``, the one in force, else the configured one). Every post it starts thus has
    nearly all of the limit a ``publish`` run of its own would have (a call, a lookup after an
    ambiguous answer, media). The posts it did not start are sent on in a message of their
    own."""
    one_call = settings.provider_connect_timeout_s + settings.provider_timeout_s
    soft = settings.task_soft_time_limit_s if soft_limit_s is None else soft_limit_s
    return max(0.0, min(one_call, soft - one_call - MANY_MARGIN_S))


#: What a ``publish_many`` run keeps of its soft time limit beyond one call's timeouts.
MANY_MARGIN_S = 5.0


def _soft_limit_s(task: HeraldTask) -> float | None:
    """The soft time limit in force for this run: the message's, or one set at run time
    (Flower, ``celery control time_limit``); None for the configured one."""
    _, soft = task.request.timelimit or (None, None)
    return soft or task.soft_time_limit or None


def _send_on(posts: list[PostToPublish], reason: str) -> None:
    """Send the posts a ``publish_many`` run did not start in a message of their own (each
    still carrying its trace and correlation). If the broker will not take it, the posts are
    marked for the sweep's next run (:func:`herald.publishing.dispatch.mark_unsent`)."""
    if not posts:
        return
    try:
        publish_many_signature(posts).apply_async()
    except Exception as exc:
        _hand_to_the_sweep([], [post.post_id for post in posts], exc)
        return
    log.warning("publish.many_sent_on", count=len(posts), reason=reason)


def _fail_revoked_many(task: HeraldTask, payload: PublishPosts, task_id: str) -> None:
    """``publish_many``'s :meth:`HeraldTask.on_revoked`: each of its posts still queued fails,
    as a revoked ``publish`` message's post does."""
    with db.session_scope() as session:
        db.service_scope(session, "publish_revoked")
        for post in payload.posts:
            with context.acting_for(post.correlation_id, _workspace(post)):
                editing.fail_revoked(session, post.post_id, task_id)


def _reconcile_lost_many(task: HeraldTask, payload: PublishPosts, process: str) -> None:
    """``publish_many``'s :meth:`HeraldTask.on_process_lost`: the pool process died with one
    of its posts perhaps mid-call. Each post is handed to ``reconcile_lost``, which settles
    only one whose open attempt that process ran; the posts it had not started are run by the
    message's redelivery (a lost process's message goes back to the queue) or, if it was acked
    (a time limit, a terminate), by the sweep."""
    for post in payload.posts:
        with context.acting_for(post.correlation_id, _workspace(post)):
            _reconcile_lost_post(post.post_id, process)


def _many_loss_limit(task: HeraldTask, kwargs: Any) -> int:
    """``publish_many``'s :meth:`HeraldTask.process_loss_limit` (:func:`many_loss_limit`)."""
    return many_loss_limit(get_settings(), kwargs)


def many_loss_limit(settings: Settings, kwargs: Any) -> int:
    """After how many lost processes a ``publish_many`` message is refused as poison: one more
    than ``HERALD_TASK_MAX_PROCESS_LOSSES`` for each post beyond the first, up to
    ``HERALD_PUBLISH_MANY_MAX``. A redelivered message skips the posts its earlier runs
    claimed, so losses on different posts are progress, not poison; a message that makes no
    progress is refused after at most that many more losses. On quorum queues the bound stays below
    their delivery limit, so that the worker, not RabbitMQ, ends such a message, and records
    it."""
    posts = kwargs.get("posts") if isinstance(kwargs, dict) else None
    # Bounded by what the dispatcher sends (a producer's 50 posts get no more), since each
    # loss also sends a reconcile for every post of the message.
    most = min(PUBLISH_MANY_MAX, settings.publish_many_max)
    extra = min(len(posts), most) - 1 if isinstance(posts, list) and posts else 0
    limit = settings.task_max_process_losses + extra
    if settings.quorum_queues:
        limit = min(
            limit, max(settings.task_max_process_losses, settings.broker_delivery_limit - 1)
        )
    return limit


def _workspace(post: PostToPublish) -> str | None:
    return str(post.workspace_id) if post.workspace_id else None


class PostsFailed(Exception):
    """Posts of a ``publish_many`` run failed unexpectedly (each logged as it failed): the run
    is a failed run, once its other posts are done."""


def _post_failed(post: PostToPublish, exc: Exception) -> None:
    """One post of a ``publish_many`` run failed unexpectedly; the others go on. Logged with
    the post (a traceback only for what is not a database error); the post is left where the
    failure left it, for the sweep."""
    error_type, error = describe_error(exc)
    log.error(
        "publish.many_post_failed",
        post_id=str(post.post_id),
        error_type=error_type,
        error=error,
        exc_info=None if isinstance(exc, SQLAlchemyError) else exc,
    )


def _retry_rest(
    task: HeraldTask, exc: Exception, failing: PostToPublish, rest: list[PostToPublish]
) -> None:
    """The database failed ``failing``: retry the message (raises Celery's ``Retry``) with it
    and the posts not yet done, it last, so that a lasting error on its own row holds up no
    other post. When the retries are spent, the others are sent on and this returns: only
    ``failing`` is left to the sweep, and the caller raises the error."""
    retries = task.request.retries or 0
    if retries >= DB_BLIPS.max_retries:
        _send_on(rest, "retries spent on another post")
        return
    remaining = [*rest, failing]
    kwargs = {"posts": [p.model_dump(mode="json", exclude_none=True) for p in remaining]}
    raise task.retry_by(DB_BLIPS, exc, kwargs=kwargs)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.publish_many",
    scope="service",
    payload_model=PublishPosts,
    log_success=False,
    on_revoked=_fail_revoked_many,
    on_process_lost=_reconcile_lost_many,
    process_loss_limit=_many_loss_limit,
)
def publish_many(self: HeraldTask, payload: PublishPosts) -> dict[str, int]:
    """Publish several posts due now, one after the other, each as ``publish`` would: in its
    own session (claimed, sent and recorded with the same statements), under its own
    correlation and trace. One post's unexpected error is logged and the others go on (the
    run then fails, counted once); a database away retries this message with the posts not yet
    done."""
    settings = get_settings()
    budget = many_budget_s(settings, _soft_limit_s(self))
    started = time.monotonic()
    outcomes: Counter[str] = Counter()
    posts = payload.posts
    for index, post in enumerate(posts):
        if index and time.monotonic() - started > budget:
            _send_on(posts[index:], "time budget")
            outcomes["sent_on"] += len(posts) - index
            break
        try:
            with (
                in_post_trace(
                    "herald.publish_post",
                    post_id=str(post.post_id),
                    correlation_id=post.correlation_id,
                    workspace_id=_workspace(post),
                    stored=TraceContext.stored(post.traceparent, post.tracestate),
                ),
                self._session_scope(),
            ):
                status = _publish_one(self, post.post_id)
        except DB_BLIPS.retry_on as exc:
            _retry_rest(self, exc, post, posts[index + 1 :])
            raise
        except SoftTimeLimitExceeded:
            _send_on(posts[index + 1 :], "soft time limit")
            raise
        except Exception as exc:  # this post's own failure: the others go on
            _post_failed(post, exc)
            status = "error"
        outcomes[status or "none"] += 1
    if outcomes["error"]:
        raise PostsFailed(f"{outcomes['error']} of {len(posts)} posts failed: {dict(outcomes)}")
    return dict(outcomes)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.record_outcome",
    scope="service",
    payload_model=RecordOutcome,
    retry_policy=RECORDING,
)
def record_outcome(self: HeraldTask, payload: RecordOutcome) -> str | None:
    outcome = record_answer(self.session, payload.answer, get_settings(), _keys())
    return _settled(self, outcome, payload.answer.post_id)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.reconcile_lost",
    scope="service",
    payload_model=ReconcileLost,
    retry_policy=DB_BLIPS,
)
def reconcile_lost(self: HeraldTask, payload: ReconcileLost) -> str | None:
    return resolve_lost_process(
        self.session, get_settings(), _keys(), payload.post_id, payload.process
    )


class WorkerWatch:
    """Two looks a worker's main process takes, at the worker's start and then every
    ``sweep_interval_s``, which no message can ask for.

    **Orphans** (:meth:`look`): the posts of pool processes that died unseen. A worker killed
    whole (``kill -9`` of its main process, the OOM killer choosing it) takes its pool
    processes with it (Celery has them die with their parent), and no process sees them die. A
    worker of the same pid namespace — the same one restarted, or another on the
    host — can prove them gone (:func:`herald.publishing.sweep.orphaned_attempts`); it has
    their posts reconciled as a lost pool process's are, within one call's timeout, instead of
    after ``HERALD_PUBLISHING_TIMEOUT_S``. Where nothing can be proven (a container restarted
    in a new namespace, another host) the sweep's timeout still applies.

    **The broker** (:meth:`look_at_the_broker`): a Redis that lost everything it held (a flush,
    a restart without persistence) lost Herald's queue bindings too, and every message sent to
    the exchange since, ``sweep_stuck``'s from beat among them, is dropped without a word until
    the queues are declared again (:mod:`herald.broker.restarts`). The watch declares them and,
    if the broker's marker was gone, sends every queued post again at once.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._sent = RecentCounts(10_000)  # attempts already handed on, so each is sent once
        self._thread = threading.Thread(target=self._run, name="herald-worker-watch", daemon=True)

    def start(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __enter__(self) -> WorkerWatch:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def look(self) -> int:
        """One look: hand each newly found orphan to ``herald.posts.reconcile_lost``; returns
        how many were handed on."""
        namespace = context.PID_NAMESPACE
        if namespace is None:  # not Linux, or /proc unreadable: nothing can be proven
            return 0
        with db.new_session() as session:
            orphans = orphaned_attempts(session, namespace)
        handed = 0
        held: dict[str, float] = {}  # each dead run's task id: when it started
        for orphan in orphans:
            key = (orphan.post_id, orphan.process)
            if key in self._sent:
                continue
            if orphan.task_id and orphan.started_at:
                held[orphan.task_id] = orphan.started_at.timestamp()
            with context.acting_for(orphan.correlation_id, str(orphan.workspace_id)):
                wait = _reconcile_soon(orphan.post_id, orphan.process)
                log.warning(
                    "publish.orphan_found",
                    post_id=str(orphan.post_id),
                    process=orphan.process,
                    resolve_in_s=wait,
                )
            self._sent.note(key)
            handed += 1
        if held:
            self._restore_held(held)
        return handed

    def _restore_held(self, runs: dict[str, float]) -> None:
        """The dead runs' messages, on Redis still held unacked: run them again now
        (:func:`herald.broker.redis.restore_held`). If the broker cannot be asked, the posts
        they had not started wait for the sweep's queued timeout, as before."""
        settings = get_settings()
        if broker_kind(settings.broker_url) != "redis":
            return
        try:
            with broker_connection(settings) as connection:
                restored = restore_held(connection, runs)
        except Exception as exc:
            error_type, error = describe_error(exc)
            log.warning("publish.held_messages_unrestored", error_type=error_type, error=error)
            return
        if restored:
            log.warning("publish.held_messages_restored", count=restored)

    def look_at_the_broker(self) -> int:
        """One look at the broker: how many queued posts were sent again (0 unless it was
        found emptied)."""
        settings = get_settings()
        if not _broker_emptied(settings):
            return 0
        with db.new_session() as session:
            db.service_scope(session, "sweep_stuck")
            return resend_lost(session, settings, broker_emptied=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            for look in (self.look, self.look_at_the_broker):
                try:
                    look()
                except Exception as exc:  # the database or broker away: the next look retries
                    error_type, error = describe_error(exc)
                    log.warning(
                        "worker.watch_failed",
                        look=look.__name__,
                        error_type=error_type,
                        error=error,
                    )
            self._stopping.wait(self._interval_s)


_watch: WorkerWatch | None = None


@signals.worker_ready.connect
def _watch_for_orphans(**_: Any) -> None:
    global _watch  # noqa: PLW0603 - one watch per worker process
    if _watch is None:
        _watch = WorkerWatch(get_settings().sweep_interval_s)
        _watch.start()


@signals.worker_shutdown.connect
def _stop_watching(**_: Any) -> None:
    global _watch  # noqa: PLW0603
    if _watch is not None:
        _watch.stop()
        _watch = None


def _settled(task: HeraldTask, outcome: Outcome, post_id: uuid.UUID) -> str | None:
    """Follow up a recorded outcome: a refused access token refreshes, then publishes."""
    if outcome.refresh is not None:
        task.enqueue(
            app.signature(
                "herald.tokens.refresh",
                kwargs={
                    "integration_id": str(outcome.refresh),
                    "seen_token_version": outcome.seen_token_version,
                    "then_publish": str(post_id),
                },
            )
        )
    return outcome.status.value if outcome.status else None


def _broker_emptied(settings: Settings) -> bool:
    """:func:`herald.broker.restarts.messages_lost` (Herald's queues declared again on the
    way); False (the queued timeout still applies) when the broker cannot be asked."""
    try:
        emptied = restarts.messages_lost(broker_connection(settings), app.amqp.queues.values())
    except Exception as exc:  # the sends below fail too, and say so
        log.warning("sweep.broker_unasked", error=describe_error(exc)[1])
        return False
    if emptied:
        log.warning("sweep.broker_emptied", detail="every queued post's message is sent again")
    return emptied


def resend_lost(session: Session, settings: Settings, *, broker_emptied: bool = False) -> int:
    """The sweep's first step (:func:`herald.publishing.sweep.requeue_lost`): posts whose
    message is lost are committed as sent again, sent, and the sends confirmed. Returns how
    many."""
    requeued = requeue_lost(session, settings, broker_emptied=broker_emptied)
    # One message per post: a post whose run kills its process (and so its message, refused
    # as poison in the end) must not take others down with it again.
    commit_and_hand_over(session, requeued, partial(send_claimed, together=False))
    return len(requeued)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.sweep_stuck",
    scope="service",
    payload_model=NoArguments,
    periodic=True,
)
def sweep_stuck(self: HeraldTask, payload: NoArguments) -> dict[str, int]:
    settings = get_settings()
    requeued = resend_lost(self.session, settings, broker_emptied=_broker_emptied(settings))
    resolved = resolve_dead_workers(self.session, settings, _keys())
    return {"requeued": requeued, **resolved}
