"""Correlation context: which request or flow the running code belongs to.

A correlation id enters at an edge (the ``X-Correlation-ID`` HTTP header, the Celery header
``x_correlation_id`` set by another service, a message's own task id when it has no such header,
or a fresh UUID) and lives in contextvars while
the work runs. The causation id names the task whose run caused the current one; the workspace
id names the tenant. Celery signal handlers (``herald.celery_app``) copy these into every
message a task publishes and restore them when the message is consumed.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path

import structlog

CORRELATION_HEADER = "x_correlation_id"
CAUSATION_HEADER = "x_causation_id"
WORKSPACE_HEADER = "x_workspace_id"
HTTP_CORRELATION_HEADER = "X-Correlation-ID"

_correlation_id: ContextVar[str | None] = ContextVar("herald_correlation_id", default=None)
_causation_id: ContextVar[str | None] = ContextVar("herald_causation_id", default=None)
_workspace_id: ContextVar[str | None] = ContextVar("herald_workspace_id", default=None)
_task_id: ContextVar[str | None] = ContextVar("herald_task_id", default=None)

# An id from outside is accepted only if it looks like one: no log injection through it.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BOOT_ID = re.compile(r"^[0-9a-f-]{36}$")
_HOST = socket.gethostname()[:180]  # the attempt's column holds 200 characters


def _pid_namespace() -> str | None:
    """This process's pid namespace, named so that no other host's or container's is named
    the same: the kernel's boot id and the namespace's inode (Linux). None where either cannot
    be read."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    inode = namespace.removeprefix("pid:[").removesuffix("]")
    if not (_BOOT_ID.match(boot) and inode.isdigit()):
        return None
    return f"{boot}/{inode}"


#: Forked pool processes share their parent's; the attempt's column holds 64 characters.
PID_NAMESPACE = _pid_namespace()


def process_gone(process: str) -> bool:
    """Whether ``process`` (a :func:`process_name` recorded in :data:`PID_NAMESPACE`, this
    process's own) has exited: no process of this namespace has its pid any more. False when
    that cannot be told, or a process has the pid again: only a proven exit counts."""
    pid = process.rpartition(":")[2]
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (alive), or no pid at all
        return False
    return False


def process_name(pid: int | None = None) -> str:
    """``host:pid`` of this process, or of process ``pid`` on this host: how a publish attempt
    names the process that ran it, so the worker that saw that process die can find its attempt
    (:meth:`herald.tasks.base.HeraldTask.on_process_lost`)."""
    return f"{_HOST}:{os.getpid() if pid is None else pid}"


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def clean_id(value: object) -> str | None:
    """The value if it is a well-formed id, else None (so a fresh one is made)."""
    if isinstance(value, str) and _VALID_ID.match(value):
        return value
    return None


@dataclass(frozen=True, slots=True)
class Correlation:
    correlation_id: str | None
    causation_id: str | None
    workspace_id: str | None
    task_id: str | None


def current() -> Correlation:
    return Correlation(
        _correlation_id.get(), _causation_id.get(), _workspace_id.get(), _task_id.get()
    )


def correlation_id() -> str | None:
    return _correlation_id.get()


def stamp() -> tuple[str | None, str | None]:
    """The running work's correlation id and workspace (what every span is stamped with)."""
    return _correlation_id.get(), _workspace_id.get()


def bind(
    *,
    correlation_id: str | None,
    causation_id: str | None = None,
    workspace_id: str | None = None,
    task_id: str | None = None,
    **log_fields: str | None,
) -> None:
    """Set the context for the work about to run and mirror it into the log context."""
    _correlation_id.set(correlation_id)
    _causation_id.set(causation_id)
    _workspace_id.set(workspace_id)
    _task_id.set(task_id)
    structlog.contextvars.clear_contextvars()
    fields = {
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "workspace_id": workspace_id,
        "task_id": task_id,
        **log_fields,
    }
    structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


def act_for_workspace(workspace_id: str) -> None:
    """The running work acts for ``workspace_id``, which its validated payload names. A
    message's workspace header is its sender's word; the payload is what the work does, so it
    is what logs and dead letters name."""
    _workspace_id.set(workspace_id)
    structlog.contextvars.bind_contextvars(workspace_id=workspace_id)


def clear() -> None:
    for var in (_correlation_id, _causation_id, _workspace_id, _task_id):
        var.set(None)
    structlog.contextvars.clear_contextvars()


@contextmanager
def correlated(
    correlation_id: str | None = None, *, workspace_id: str | None = None
) -> Iterator[str]:
    """Run a block inside a correlation (continuing ``correlation_id`` or starting one)."""
    previous = current()
    cid = clean_id(correlation_id) or new_correlation_id()
    bind(
        correlation_id=cid,
        causation_id=previous.causation_id,
        workspace_id=workspace_id or previous.workspace_id,
        task_id=previous.task_id,
    )
    try:
        yield cid
    finally:
        if previous.correlation_id is None:
            clear()
        else:
            bind(
                correlation_id=previous.correlation_id,
                causation_id=previous.causation_id,
                workspace_id=previous.workspace_id,
                task_id=previous.task_id,
            )


@contextmanager
def acting_for(correlation_id: str | None, workspace_id: str | None) -> Iterator[None]:
    """Run a block on behalf of another flow, keeping this run's task and causation: the
    dispatcher sending one post's publish under the correlation the post was scheduled with.
    A None leaves that part of the context as it is."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    fields: dict[str, str] = {}
    if correlation_id:
        tokens.append((_correlation_id, _correlation_id.set(correlation_id)))
        fields["correlation_id"] = correlation_id
    if workspace_id:
        tokens.append((_workspace_id, _workspace_id.set(workspace_id)))
        fields["workspace_id"] = workspace_id
    # Reset by token, not structlog's bound_contextvars: that copies the whole context to
    # save the keys it rebinds, on every post of a publish_many run.
    log_tokens = structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**log_tokens)
        for var, token in reversed(tokens):
            var.reset(token)


def outgoing_headers(publishing_task_id: str | None) -> dict[str, str]:
    """Headers for a message published now, from the current context.

    The causation id is the running task's id; a task re-publishing itself (a retry, same
    task id) keeps the causation it already had, so a retry is not its own cause.
    """
    ctx = current()
    headers: dict[str, str] = {CORRELATION_HEADER: ctx.correlation_id or new_correlation_id()}
    if ctx.task_id and ctx.task_id != publishing_task_id:
        headers[CAUSATION_HEADER] = ctx.task_id
    elif ctx.causation_id:
        headers[CAUSATION_HEADER] = ctx.causation_id
    if ctx.workspace_id:
        headers[WORKSPACE_HEADER] = ctx.workspace_id
    return headers


def incoming(
    headers: Mapping[str, object], task_id: str | None = None
) -> tuple[str, str | None, str | None]:
    """(correlation id, causation id, workspace id) from a consumed message's headers.

    A message sent without a correlation id (celery-node, redis-cli, another language) is
    correlated by its own task id, which its sender knows, so the caller can find the flow;
    a fresh UUID only when there is no usable task id either.
    """
    cid = clean_id(headers.get(CORRELATION_HEADER)) or clean_id(task_id) or new_correlation_id()
    return cid, clean_id(headers.get(CAUSATION_HEADER)), clean_id(headers.get(WORKSPACE_HEADER))
