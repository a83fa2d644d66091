"""The one task base class. Plumbing lives here once, so task bodies read as the flow.

:class:`HeraldTask` owns, for every task:

- **the payload**: keyword arguments validated against the task's pydantic ``payload_model``
  on arrival. A malformed payload or an unknown field is rejected: logged with the reason,
  kept in ``dead_letters`` (by :func:`herald.broker.dead_letters.record_dead_letter`, as the
  consumer keeps a message no task could be made of), never retried, and the worker goes on;
- **the database session**: opened on first use of ``self.session``, committed when the body
  returns, rolled back when it raises. Its tenant scope too (herald/db.py): a task declared
  ``scope="service"`` (beat's cross-workspace jobs, and the per-post tasks that load rows by
  the ids the dispatcher sent) runs as the service role; any other task is limited to the
  workspace of its payload's ``workspace_id`` or, failing that, of its message's workspace
  header, and sees no tenant row when it has neither. Tasks enqueued with
  :meth:`HeraldTask.enqueue` are sent only after the transaction that decided them commits,
  and never if it rolls back;
- **correlation**: bound by the signal handlers in ``herald.celery_app`` and added here to the
  task's span;
- **counters and timing**: started / succeeded / retried / failed / rejected, runtime and
  queue wait, by task name and queue (``telemetry/metrics.py``; sent and received are counted
  by the signal handlers in ``herald.celery_app``);
- **job runs**: a task declared ``periodic=True`` (beat's jobs) records each run's start and
  outcome in ``job_runs``, in a transaction of its own; other tasks pay nothing for it;
- **revoked messages** (Flower's revoke, ``celery control revoke``): counted and logged once,
  here, with why (revoked, expired, terminated); a task that must settle what a revoked message
  was for (publish: its post) overrides :meth:`HeraldTask.on_revoked`;
- **a producer's request** (a task declared ``producer_request=True``: schedule, reschedule,
  cancel), whose message is its only copy: one that expires unrun or whose run fails is kept
  as a dead letter with its payload, not only logged;
- **lost pool processes** (the OOM killer, a ``kill -9`` of a pool child, Flower's *Terminate*):
  the worker's main process sees the child that ran a message die (:class:`HeraldRequest`); it
  counts and logs that once, here, and a task whose work the dead process may have left half
  done (publish: a call to the network) overrides :meth:`HeraldTask.on_process_lost`;
- **the retry policy**, declared per task as exception classes (:class:`RetryPolicy`): those
  exceptions retry with exponential backoff and jitter, up to a bound; anything else fails.
  Each retry and each failure is one log line with the error's class and a short message (a
  database error's SQL statement left out); a traceback only for the unexpected.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn

import structlog
from billiard.exceptions import Terminated, WorkerLostError
from celery import Task, signals
from celery.canvas import Signature
from celery.worker.request import Request
from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.broker.dead_letters import Identity, record_dead_letter, workspace_named
from herald.broker.topology import deliverable_countdown
from herald.models import utcnow
from herald.settings import get_settings
from herald.telemetry import context, metrics, records, spans
from herald.telemetry.errors import describe_error

log = structlog.get_logger("herald.tasks")

_session: ContextVar[Session | None] = ContextVar("herald_task_session", default=None)
_workspace: ContextVar[str | None] = ContextVar("herald_task_workspace", default=None)


class PayloadRejected(Exception):
    """The message's payload cannot be processed as sent. Never retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """Which exceptions retry, how often, and how long to wait between tries."""

    retry_on: tuple[type[Exception], ...] = ()
    max_retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    jitter: bool = True
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def countdown(self, retries: int) -> float:
        """Exponential backoff with jitter: uniform in [base/2, min(max, base·2^retries)]."""
        # The exponent is bounded: ``retries`` comes from the message's header.
        ceiling = min(self.backoff_max_s, self.backoff_s * (2 ** min(max(retries, 0), 64)))
        return self._rng.uniform(self.backoff_s / 2, ceiling) if self.jitter else ceiling


class HeraldRequest(Request):
    """Celery's request (worker main process), which also tells the task when the pool process
    running its message died: after Celery has handled the loss (a lost worker's message goes
    back to the queue, a terminated one is acked), :func:`_process_lost` runs.

    A message whose runs keep killing their process (a memory blow-up, a crash in native code)
    would go back to the queue and kill the next process, for ever on Redis. The
    ``HERALD_TASK_MAX_PROCESS_LOSSES``-th loss of one message in this worker refuses it
    instead: a dead letter is recorded and the message acked."""

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        task, pid = self.task, self.worker_pid
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # billiard may wrap it
        if not (pid and isinstance(task, HeraldTask) and isinstance(exc, _PROCESS_GONE)):
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            return
        if isinstance(exc, WorkerLostError):
            self._refuse_if_poison(exc)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        _process_lost(task, self._context, int(pid), exc)  # type: ignore[attr-defined]

    def _refuse_if_poison(self, exc: BaseException) -> None:
        losses = _losses.note(self.id)
        task = self.task
        assert isinstance(task, HeraldTask)
        if losses < task.process_loss_limit(self.kwargs):
            return  # Celery puts it back on the queue
        try:
            correlation_id, workspace_id = _correlation_of(self._context, self.id)  # type: ignore[attr-defined]
            record_dead_letter(
                f"its run killed the pool process running it {losses} times (last: {exc}); "
                "refused so that it cannot take down more",
                Identity(self.task.name, self.id, correlation_id, workspace_id),
                payload=self.kwargs,
                queue=metrics.queue_of(self.delivery_info),
                source="worker",
                event="task.poison",
            )
        except Exception as error:  # never into Celery's consumer: the message goes back
            error_type, message = describe_error(error)
            log.error("task.poison_unrecorded", error_type=error_type, error=message)
            return
        self.acknowledge()  # Celery's requeue of a lost worker's message is then a no-op


class RecentCounts:
    """How many times each of the most recently noted keys was noted (the last ``size`` keys;
    the oldest is forgotten first): a worker's memory of recent messages or posts."""

    def __init__(self, size: int = 1000) -> None:
        self._counts: OrderedDict[Hashable, int] = OrderedDict()
        self._size = size

    def note(self, key: Hashable) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return count

    def __contains__(self, key: Hashable) -> bool:
        return key in self._counts


# How many times each recent message's run lost its process, in this worker.
_losses = RecentCounts()


# How billiard reports a job whose process exited under it: killed (WorkerLostError), killed on
# an operator's request (Terminated), or exiting (SystemExit, reported before the exit ends).
_PROCESS_GONE = (WorkerLostError, Terminated, SystemExit, KeyboardInterrupt)


class HeraldTask(Task):  # type: ignore[type-arg]
    """Base of every Herald task; see the module docstring for what it owns."""

    abstract = True
    Request = "herald.tasks.base:HeraldRequest"
    typing = False  # arguments are validated by ``payload_model`` on arrival, not at send time
    payload_model: ClassVar[type[BaseModel] | None] = None
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    periodic: ClassVar[bool] = False  # a beat job: its runs are recorded in ``job_runs``
    scope: ClassVar[Literal["tenant", "service"]] = "tenant"  # see the module docstring
    # False for a task whose body logs its own line per run (publish: publish.attempt), so a
    # run costs one INFO line; task.succeeded is then at DEBUG.
    log_success: ClassVar[bool] = True
    # A producer's request (schedule, reschedule, cancel): its message is the request's only
    # copy, so a message that expires unrun, or a run that fails, is kept as a dead letter.
    producer_request: ClassVar[bool] = False
    # Celery logs a failure of these at INFO without a traceback; ``on_failure`` below is the
    # one place a Herald task's failure is logged, concisely.
    throws = (Exception,)

    # -- the session and after-commit sends --------------------------------------------------

    @property
    def session(self) -> Session:
        """This run's session, opened on first use."""
        current = _session.get()
        if current is None:
            current = db.new_session()
            if self.scope == "service":
                db.service_scope(current, self.name)
                metrics.service_scope_uses.add(1, {"task": self.name})
            elif (workspace := _workspace.get() or context.current().workspace_id) is not None:
                db.tenant_scope(current, workspace)
            _session.set(current)
        return current

    def enqueue(self, signature: Signature[Any], **options: Any) -> None:
        """Send ``signature`` once the current transaction commits (never if it rolls back)."""
        db.after_commit(self.session, lambda: signature.apply_async(**options))

    @contextmanager
    def _session_scope(self) -> Iterator[None]:
        token = _session.set(None)
        try:
            yield
            current = _session.get()
            if current is not None:
                current.commit()
        except BaseException:
            current = _session.get()
            if current is not None:
                try:
                    current.rollback()
                except Exception:  # the run's own error is the one to raise
                    # A time limit that interrupted a query leaves the connection mid-command
                    # ("another command is already in progress"): it goes, not back to the pool.
                    current.invalidate()
            raise
        finally:
            current = _session.get()
            if current is not None:
                current.close()
            _session.reset(token)

    # -- the run ---------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        labels = self._labels()
        self._count("started")
        wait = metrics.queue_wait_s(
            getattr(self.request, metrics.SENT_AT_HEADER, None), self.request.eta
        )
        if wait is not None:
            metrics.task_queue_wait.record(wait, labels)
        # Correlation and workspace reach the span through the span processor
        # (telemetry/spans.py); the task's own name and its cause are stamped here.
        span = trace.get_current_span()
        span.set_attribute("herald.task", self.name)
        causation_id = context.current().causation_id
        if causation_id:
            span.set_attribute("herald.causation_id", causation_id)
        try:
            call = self._validated_call(args, kwargs)
            with self._job_run(), self._session_scope():
                try:
                    return call()
                except self.retry_policy.retry_on as exc:
                    raise self.retry_by(self.retry_policy, exc) from exc
        finally:
            metrics.task_runtime.record(time.monotonic() - started, labels)

    def retry_by(self, policy: RetryPolicy, exc: Exception, **options: Any) -> Exception:
        """Celery's retry of this message after ``policy``'s backoff (it raises; ``options``
        go to :meth:`celery.Task.retry`, such as other ``kwargs``). Once ``policy``'s retries
        are spent it raises ``exc``."""
        countdown = deliverable_countdown(
            policy.countdown(self.request.retries or 0), self.app.amqp.queues.values()
        )
        return self.retry(exc=exc, countdown=countdown, max_retries=policy.max_retries, **options)

    def _validated_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
        model = self.payload_model
        if model is None:
            return lambda: self.run(*args, **kwargs)
        if args:
            self._reject("the payload must be sent as keyword arguments, not positional", kwargs)
        try:
            payload = model.model_validate(kwargs)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(payload)'}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            self._reject(f"invalid payload for {self.name}: {problems}", kwargs)
        named = getattr(payload, "workspace_id", None)
        workspace = str(named) if named is not None else None
        _workspace.set(workspace)
        if workspace is not None and workspace != context.current().workspace_id:
            # The message's workspace header said otherwise: logs and spans name the payload's.
            context.act_for_workspace(workspace)
            trace.get_current_span().set_attribute(spans.WORKSPACE_ATTRIBUTE, workspace)
        return lambda: self.run(payload)

    def _reject(self, reason: str, payload: dict[str, Any]) -> NoReturn:
        """Record the refused payload, then raise so Celery acks it without retrying."""
        ctx = context.current()
        record_dead_letter(
            reason,
            Identity(
                task_name=self.name,
                task_id=self.request.id,
                correlation_id=ctx.correlation_id,
                workspace_id=workspace_named(payload, ctx.workspace_id),
            ),
            payload=payload,
            source="task",
            event="task.rejected",
        )
        raise PayloadRejected(reason)

    # -- lifecycle hooks (counted once, here) ----------------------------------------------------

    def _labels(self) -> dict[str, str]:
        return {"task": self.name, "queue": metrics.queue_of(self.request.delivery_info)}

    def _count(self, event: str) -> None:
        metrics.task_events[event].add(1, self._labels())

    @contextmanager
    def _job_run(self) -> Iterator[None]:
        """Record a periodic job's run (start and outcome) in ``job_runs``."""
        if not self.periodic:
            yield
            return
        started_at = utcnow()
        try:
            yield
        except BaseException as exc:
            records.record_job_run(self.name, started_at, error=exc)
            raise
        records.record_job_run(self.name, started_at)

    def on_revoked(self, payload: Any, task_id: str) -> None:
        """An operator revoked a message of this task before it ran (not an expiry, not a
        termination): settle what the message was for. Runs in the worker's main process, with
        the message's payload validated; the default does nothing."""

    def process_loss_limit(self, kwargs: Any) -> int:
        """After how many lost processes in this worker a message of this task (with these
        arguments, as sent) is refused as poison: ``HERALD_TASK_MAX_PROCESS_LOSSES``, unless
        the task's runs make progress from one delivery to the next (publish_many)."""
        return get_settings().task_max_process_losses

    def on_process_lost(self, payload: Any, process: str) -> None:
        """The pool process running a message of this task died mid-run; ``process`` is its
        :func:`~herald.telemetry.context.process_name`. Settle what it may have left half done.
        Runs in the worker's main process, with the message's payload validated; the default
        does nothing (the message itself was handled by Celery: a lost worker's goes back to
        the queue, a terminated one is acked)."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self._count("succeeded")
        (log.info if self.log_success else log.debug)("task.succeeded", task=self.name)

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self._count("retried")
        # One line per retry: during a database outage every running task retries, and the
        # driver's text (the SQL statement, hints, a traceback) would drown everything else.
        error_type, error = describe_error(exc)
        log.warning(
            "task.retrying",
            task=self.name,
            retries=self.request.retries,
            error_type=error_type,
            error=error,
        )

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if isinstance(exc, PayloadRejected):
            self._count("rejected")
            return
        self._count("failed")
        error_type, error = describe_error(exc)
        # A traceback helps only with what nobody expected: not for exhausted retries of a
        # declared exception, nor for database errors (whose text carries the statement).
        expected = isinstance(exc, (*self.retry_policy.retry_on, SQLAlchemyError))
        log.error(
            "task.failed",
            task=self.name,
            error_type=error_type,
            error=error,
            exc_info=None if expected else exc,
        )
        if self.producer_request:
            # Called in the pool process, or in the worker's main process for a hard time
            # limit: the message's own id and arguments, not ``self.request``'s.
            _keep_request(self, task_id, kwargs, f"the task failed: {error_type}: {error}")


@signals.task_revoked.connect
def _revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    """A Herald task's message was revoked (worker main process): count it, say why, and let
    the task settle what the message was for (:meth:`HeraldTask.on_revoked`)."""
    if not isinstance(sender, HeraldTask):
        return
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    with _on_behalf_of(sender, request, "revoked") as task_id:
        if expired and sender.producer_request:
            expires = getattr(request, "expires", None)
            _keep_request(
                sender,
                task_id,
                getattr(request, "kwargs", None),
                f"the message expired unrun (its 'expires' header: {expires})",
            )
            return
        log.warning(
            "task.revoked",
            task=sender.name,
            task_id=task_id,
            reason=reason,
            signal=None if signum is None else str(signum),
        )
        if reason == "revoked":
            _settle(
                sender,
                request,
                task_id,
                "task.revoked_unsettled",
                lambda p: sender.on_revoked(p, task_id),
            )


def _keep_request(task: HeraldTask, task_id: str, kwargs: Any, reason: str) -> None:
    """Keep a producer's request that will not be done as a dead letter, with why: its
    message is acked and was the request's only copy."""
    payload = kwargs if isinstance(kwargs, dict) else {"kwargs": kwargs}
    current = context.current()
    record_dead_letter(
        reason,
        Identity(
            task_name=task.name,
            task_id=task_id,
            correlation_id=current.correlation_id,
            workspace_id=workspace_named(payload, current.workspace_id),
        ),
        payload=payload,
        source="task",
        event="task.request_kept",
    )


def _process_lost(task: HeraldTask, request: Any, pid: int, exc: BaseException) -> None:
    """The pool process ``pid`` died running a message of ``task`` (worker main process):
    count it, say so, and let the task settle what the process may have left half done
    (:meth:`HeraldTask.on_process_lost`)."""
    with _on_behalf_of(task, request, "lost") as task_id:
        process = context.process_name(pid)
        log.error(
            "task.process_lost",
            task=task.name,
            task_id=task_id,
            process=process,
            error_type=type(exc).__name__,
            error=str(exc)[:200],
        )
        _settle(
            task,
            request,
            task_id,
            "task.process_lost_unsettled",
            lambda p: task.on_process_lost(p, process),
        )


@contextmanager
def _on_behalf_of(task: HeraldTask, request: Any, event: str) -> Iterator[str]:
    """Count ``event`` for the message ``request`` describes and run the block under the
    message's correlation; yields its task id."""
    task_id = str(getattr(request, "id", "") or "")[:200]
    queue = metrics.queue_of(getattr(request, "delivery_info", None))
    metrics.task_events[event].add(1, {"task": task.name, "queue": queue})
    with context.acting_for(*_correlation_of(request, task_id)):
        yield task_id


def _correlation_of(request: Any, task_id: str) -> tuple[str, str | None]:
    """(correlation id, workspace id) of the message ``request`` describes, as a run of it
    would bind them."""
    headers = {
        key: getattr(request, key, None)
        for key in (context.CORRELATION_HEADER, context.WORKSPACE_HEADER)
    }
    correlation_id, _causation, workspace_id = context.incoming(headers, task_id)
    kwargs = getattr(request, "kwargs", None)
    return correlation_id, workspace_named(kwargs if isinstance(kwargs, dict) else {}, workspace_id)


def _settle(
    task: HeraldTask, request: Any, task_id: str, unsettled: str, hook: Callable[[Any], None]
) -> None:
    """Call a task's hook with the message's validated payload; a hook that raises is logged
    (as ``unsettled``), never raised into Celery's consumer."""
    if task.payload_model is None:
        return
    try:
        payload = task.payload_model.model_validate(getattr(request, "kwargs", None) or {})
    except ValidationError:
        return  # a run would have refused it: there is nothing it was for
    try:
        hook(payload)
    except Exception as exc:  # a signal handler must not break the consumer
        error_type, error = describe_error(exc)
        log.error(
            unsettled,
            task=task.name,
            task_id=task_id,
            error_type=error_type,
            error=error,
        )
