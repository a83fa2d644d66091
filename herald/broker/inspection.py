"""Reading a consumed message before Celery does, and naming what is wrong with it.

Celery's strategy trusts the shape of a message: a body that is not ``[args, kwargs, embed]``
or a ``timelimit`` header that is not a pair raises outside every handler and stops the worker
("Unrecoverable error"); the message goes back to the queue and stops the next worker too.
:func:`inspect_message` checks, cheaply, everything the strategy and the request rely on (the
content type, the body's shape, the header types) and returns a :class:`Refusal` naming the
first problem, or ``None`` for a message Celery can run. It decodes the body through kombu's
memoised ``message.decode()``, so Celery reuses the result instead of decoding again.

Both task message protocols are read: protocol 2 (task and id in the headers, body
``[args, kwargs, embed]``) and protocol 1 (everything in a body object), as older clients and
other languages send it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.exceptions import ContentDisallowed
from kombu.message import Message

from herald.broker.dead_letters import Identity, workspace_named
from herald.broker.limits import MAX_BODY_BYTES, MAX_ETA_AHEAD_S, too_large
from herald.telemetry import context
from herald.telemetry.errors import describe_error

JSON = "application/json"
# Task ids are stored in 64-character columns and written into log lines.
_TASK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MAX_TASK_NAME = 200
# Far above any task's retry bound; Celery compares the header with it, Herald's backoff
# raises 2 to it.
MAX_RETRIES_HEADER = 1000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message cannot run, and what it was (as far as it could be read)."""

    reason: str
    identity: Identity
    payload: dict[str, Any]


def _optional(*types: type) -> Callable[[object], bool]:
    return lambda value: value is None or (isinstance(value, types) and not _is_bool(value, types))


def _is_bool(value: object, types: tuple[type, ...]) -> bool:
    # bool is an int to Python; a header that must count must not be ``true``.
    return isinstance(value, bool) and bool not in types


# Made once: every message's headers are checked with them.
_integer, _seconds = _optional(int), _optional(int, float)


def _count(bound: int) -> Callable[[object], bool]:
    return lambda value: _integer(value) and (value is None or 0 <= value <= bound)  # type: ignore[operator]


def _time_limit(value: object) -> bool:
    return _seconds(value) and (value is None or value >= 0)  # type: ignore[operator]


def _time_limits(value: object) -> bool:
    return value is None or (
        isinstance(value, list | tuple) and len(value) == 2 and all(map(_time_limit, value))
    )


def _instant(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        _utc(value)
    except (ValueError, OverflowError, TypeError):
        return False
    return True


def _utc(value: str) -> datetime | None:
    parsed = maybe_iso8601(value)
    if parsed is None:
        return None
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    aware.astimezone(UTC).timestamp()  # raises for an instant that has no timestamp
    return aware


def _list_of(kind: type) -> Callable[[object], bool]:
    return lambda value: (
        value is None
        or (isinstance(value, list | tuple) and all(isinstance(item, kind) for item in value))
    )


# What Celery's strategy, request and tracer read from the task headers, and the types they
# assume. Headers not named here (Herald's x_* headers among them) are read defensively.
_HEADER_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "shadow": (_optional(str), "a string"),
    "root_id": (_optional(str), "a string"),
    "parent_id": (_optional(str), "a string"),
    "group": (_optional(str), "a string"),
    "group_index": (_optional(int), "an integer"),
    "lang": (_optional(str), "a string"),
    "meth": (_optional(str), "a string"),
    "origin": (_optional(str), "a string"),
    "argsrepr": (_optional(str), "a string"),
    "kwargsrepr": (_optional(str), "a string"),
    "retries": (_count(MAX_RETRIES_HEADER), f"a count from 0 to {MAX_RETRIES_HEADER}"),
    "replaced_task_nesting": (_optional(int), "an integer"),
    "ignore_result": (_optional(bool), "true or false"),
    "timelimit": (_time_limits, "a pair [soft, hard] of seconds or nulls"),
    "eta": (_instant, "an ISO 8601 time"),
    "expires": (_instant, "an ISO 8601 time"),
    "stamped_headers": (_list_of(str), "a list of strings"),
    "stamps": (_optional(dict), "an object"),
}


def _signature(value: object) -> bool:
    """A plain task signature as Celery sends one (``Signature`` as a dict): a task name and
    its arguments and options. Canvas types (a group or chain as a callback) are not taken:
    their members are not checked, and Celery would run them after Herald's task has done its
    work, raising there."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("task"), str)
        and 0 < len(value["task"]) <= _MAX_TASK_NAME
        and isinstance(value.get("args"), list | tuple)
        and isinstance(value.get("kwargs"), dict)
        and isinstance(value.get("options"), dict)
        and value.get("subtask_type") is None
        and isinstance(value.get("immutable", False), bool)
    )


def _signatures(value: object) -> bool:
    return value is None or (isinstance(value, list | tuple) and all(map(_signature, value)))


_SIGNATURE = "a plain task signature ({task, args, kwargs, options})"
_EMBED_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "callbacks": (_signatures, f"a list of {_SIGNATURE}s"),
    "errbacks": (_signatures, f"a list of {_SIGNATURE}s"),
    "chain": (_signatures, f"a list of {_SIGNATURE}s"),
    "chord": (lambda value: value is None or _signature(value), _SIGNATURE),
}


class _Refused(Exception):
    """Raised inside the inspection with the reason; never leaves this module."""


def inspect_message(message: Message, registered: Container[str]) -> Refusal | None:
    """``None`` if Celery can run ``message`` as a task registered here, else the refusal.

    A message Celery can run runs under the worker's time limits, whatever its ``timelimit``
    header asks: a longer limit would keep a process stuck in a call that never returns, and a
    shorter one kills a task mid-transaction or mid-call (a producer's request lost, a post
    left ``publishing``). Operators change limits with the ``time_limit`` remote control,
    whose values are checked (:mod:`herald.broker.control`)."""
    headers = message.headers
    body: Any = None
    try:
        if not isinstance(headers, dict):
            raise _Refused("the message headers are not a table")
        if message.content_type != JSON:
            raise _Refused(
                f"content type {message.content_type!r} refused: Herald accepts JSON only"
            )
        size = len(message.body) if isinstance(message.body, bytes | str) else 0
        if size > MAX_BODY_BYTES:
            raise _Refused(too_large(size, "the body", MAX_BODY_BYTES))
        body = _decoded(message)
        task_headers = _task_headers(headers, body)
        _check_headers(task_headers, registered)
        _check_body(body)
    except _Refused as refused:
        return Refusal(str(refused), identify(message, body), refused_payload(message, body))
    _worker_time_limits(headers, body)
    return None


def _worker_time_limits(headers: dict[str, Any], body: Any) -> None:
    # Where Celery will read it: the headers (protocol 2) or else a protocol 1 body object.
    source = body if "timelimit" not in headers and isinstance(body, dict) else headers
    if source.get("timelimit") not in (None, [None, None]):
        source["timelimit"] = [None, None]  # Celery reads None as the task's own limit


def identify(message: Message, body: Any = None) -> Identity:
    """Whatever identity can be read from ``message`` (its decoded ``body`` if known)."""
    return identity_of(message.headers, body)


def identity_of(headers: object, body: Any = None) -> Identity:
    """Task name, id, correlation and workspace from task headers and a decoded body, as far
    as they are there and well-formed (the correlation falls back to the task id)."""
    headers = headers if isinstance(headers, dict) else {}
    fields = {**body, **headers} if isinstance(body, dict) else headers
    name = fields.get("task")
    task_id = context.clean_id(fields.get("id"))
    return Identity(
        task_name=name if isinstance(name, str) else None,
        task_id=task_id,
        correlation_id=context.clean_id(fields.get(context.CORRELATION_HEADER)) or task_id,
        workspace_id=workspace_named(_kwargs_of(body), fields.get(context.WORKSPACE_HEADER)),
    )


def refused_payload(message: Message, body: Any = None) -> dict[str, Any]:
    """What a dead letter keeps of a refused message besides its raw bytes."""
    return {
        "headers": message.headers,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "body": body,
    }


def decode_error_reason(message: Message, exc: BaseException) -> str:
    if isinstance(exc, ContentDisallowed):
        return f"content type {message.content_type!r} refused: Herald accepts JSON only"
    error_type, error = describe_error(exc)
    return f"the body cannot be decoded as {message.content_type!r}: {error_type}: {error}"


def _decoded(message: Message) -> Any:
    try:
        return message.decode()
    except Exception as exc:  # any decoding failure is the sender's
        raise _Refused(decode_error_reason(message, exc)) from None


def _task_headers(headers: dict[str, Any], body: Any) -> Mapping[str, Any]:
    """The fields Celery will read as task headers (protocol 2, hybrid or protocol 1)."""
    if "task" in headers and not isinstance(body, dict):
        return headers  # protocol 2
    if isinstance(body, dict):
        if "task" in headers and "args" not in body:
            raise _Refused("a protocol 2 body must be [args, kwargs, embed], not a JSON object")
        # Protocol 1 (or Celery's hybrid form): the body's fields, overridden by the headers.
        return {**body, **headers}
    raise _Refused("no task name: neither a 'task' header nor a protocol 1 body object")


def _check_headers(headers: Mapping[str, Any], registered: Container[str]) -> None:
    name = headers.get("task")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_TASK_NAME:
        raise _Refused("the task name is missing or not a string of 1-200 characters")
    if name.startswith("celery."):
        # Registered in every app (group, chord, starmap, backend cleanup): run by a producer
        # they would call Herald's tasks around Herald's checks, and Herald never sends them.
        raise _Refused(f"task {name!r} refused: Celery's built-in tasks do not run on Herald")
    if name not in registered:
        raise _Refused(f"unknown task {name!r}: no such task is registered")
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise _Refused("the task id is missing or not 1-64 characters of letters, digits, ._:-")
    _check_rules(headers, _HEADER_RULES, "header")
    eta = _utc(headers["eta"]) if headers.get("eta") else None
    ahead = (eta - datetime.now(UTC)).total_seconds() if eta is not None else 0.0
    if ahead > MAX_ETA_AHEAD_S:
        raise _Refused(
            f"header 'eta' is {ahead:.0f} s ahead, more than the {MAX_ETA_AHEAD_S} s a worker "
            "holds a message: a post waits for its time by its scheduled_at, not in a queue"
        )


def _check_body(body: Any) -> None:
    if isinstance(body, dict):  # protocol 1 or hybrid
        args, kwargs, embed = body.get("args", ()), body.get("kwargs", {}), body
    elif isinstance(body, list | tuple) and len(body) == 3:
        args, kwargs, embed = body
    else:
        raise _Refused(f"the body is a JSON {_json_kind(body)}, not [args, kwargs, embed]")
    if not isinstance(args, list | tuple):
        raise _Refused(f"args must be a list, not a JSON {_json_kind(args)}")
    if not isinstance(kwargs, dict):
        raise _Refused(f"kwargs must be an object, not a JSON {_json_kind(kwargs)}")
    if embed is None:
        return
    if not isinstance(embed, dict):
        raise _Refused(f"embed must be an object, not a JSON {_json_kind(embed)}")
    _check_rules(embed, _EMBED_RULES, "embed field")


def _check_rules(
    values: Mapping[str, Any], rules: Mapping[str, tuple[Callable[[object], bool], str]], what: str
) -> None:
    for key, (valid, expected) in rules.items():
        if not valid(values.get(key)):
            raise _Refused(f"{what} {key!r} must be {expected}, not {values.get(key)!r:.100}")


def _kwargs_of(body: Any) -> Mapping[str, Any]:
    if isinstance(body, dict):
        kwargs = body.get("kwargs")
    elif isinstance(body, list | tuple) and len(body) == 3:
        kwargs = body[1]
    else:
        kwargs = None
    return kwargs if isinstance(kwargs, dict) else {}


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean"}
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "number" if isinstance(value, int | float) else type(value).__name__
