"""Recording a refused message or payload: one ``dead_letters`` row and one log line.

Used by the worker's consumer (a broker message no task could be made of) and by the task
base (a payload a task refused), so both are kept the same way: secrets redacted with the
log redaction, sizes bounded, NUL bytes and undecodable bytes escaped so Postgres accepts any
input, identity (task name, task id, correlation id, workspace) as far as it could be read.

Refusals are rare and never retried, so the row is written at once in its own transaction. If
the database is away the refusal still stands: the log line then carries the bounded,
redacted raw text, so nothing is lost without a trace.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from herald import db
from herald.models import DeadLetter
from herald.telemetry.context import clean_id
from herald.telemetry.errors import describe_error
from herald.telemetry.logging import redact_text, redact_value

log = structlog.get_logger("herald.dead_letters")

MAX_RAW_CHARS = 16_000
MAX_PAYLOAD_CHARS = 16_000
_MAX_DEPTH = 8  # redact_value stops here; deeper values are cut rather than stored unredacted
_TASK_ID_CHARS = 64
_NAME_CHARS = 200


@dataclass(frozen=True, slots=True)
class Identity:
    """What could be read of a refused message: every field may be missing."""

    task_name: str | None = None
    task_id: str | None = None
    correlation_id: str | None = None
    workspace_id: str | None = None


def workspace_named(kwargs: Mapping[str, Any], header: object) -> str | None:
    """The workspace a message is for: its payload's ``workspace_id`` when that is a UUID,
    else its workspace header's. The header is only its sender's word (a producer's copy of
    it may disagree), and a refused payload kept under the header's workspace would be shown,
    under row-level security, to a workspace it does not belong to."""
    named = kwargs.get("workspace_id")
    if _uuid_or_none(named) is not None:
        return str(named)
    return clean_id(header)


def record_dead_letter(
    reason: str,
    identity: Identity,
    *,
    payload: Any = None,
    raw: bytes | str | None = None,
    queue: str | None = None,
    source: str,
    event: str = "message.refused",
) -> None:
    """Keep one refused message: a ``dead_letters`` row and one log line named ``event``.

    ``source`` says who refused it (``consumer``, ``transport``, ``task``, ``worker``);
    ``payload`` is the decoded arguments when there were any, ``raw`` the bytes as they
    arrived.
    """
    try:
        stored_payload = storable_payload(payload)
    except Exception as exc:  # a refusal is recorded whatever the payload holds
        error_type, error = describe_error(exc)
        stored_payload = {"unstorable": f"{error_type}: {error}"}
    stored_raw = storable_raw(raw) if raw is not None else None
    task_name = _bounded(identity.task_name, _NAME_CHARS)
    task_id = _bounded(identity.task_id, _TASK_ID_CHARS)
    correlation_id = clean_id(identity.correlation_id)
    workspace_id = _uuid_or_none(identity.workspace_id)
    reason = redact_text(reason)
    fields: dict[str, Any] = {
        "task": task_name,
        "task_id": task_id,
        "correlation_id": correlation_id,
        "workspace_id": str(workspace_id) if workspace_id else None,
        "reason": reason,
        "source": source,
        "queue": queue,
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    try:
        with db.session_scope() as session:
            db.service_scope(session, "dead_letters")  # a refused message names any workspace
            session.add(
                DeadLetter(
                    task_name=task_name,
                    task_id=task_id,
                    correlation_id=correlation_id,
                    workspace_id=workspace_id,
                    queue=_bounded(queue, _NAME_CHARS),
                    reason=reason,
                    payload=stored_payload,
                    raw=stored_raw,
                )
            )
    except Exception as exc:  # the refusal stands; the log line keeps the message
        error_type, error = describe_error(exc)
        log.error(
            event,
            **fields,
            recorded=False,
            record_error_type=error_type,
            record_error=error,
            payload=stored_payload,
            raw=stored_raw,
        )
        return
    log.error(event, **fields, recorded=True)


def storable_raw(raw: bytes | str) -> str:
    """``raw`` as text any database accepts: UTF-8 where it decodes, ``\\xNN`` where not, NUL
    written as ``\\x00``, secrets redacted, at most :data:`MAX_RAW_CHARS` characters."""
    size, window = len(raw), MAX_RAW_CHARS + 1000
    # Redacted before the final cut (a secret cut in half might no longer be recognised), but
    # only a bounded prefix: a huge body costs no more than a small one.
    if isinstance(raw, bytes):
        raw = raw[: window * 4].decode("utf-8", "backslashreplace")  # ≤ 4 bytes a character
    text = redact_text(raw[:window]).replace("\x00", "\\x00")
    if len(text) > MAX_RAW_CHARS:
        text = text[:MAX_RAW_CHARS] + f"…[truncated; {size} bytes in all]"
    return text


def storable_payload(payload: Any) -> dict[str, Any]:
    """A refused payload as a JSON object Postgres accepts: redacted, NUL-free, bounded."""
    if payload is None:
        return {}
    value = _json_safe(redact_value(payload), 0)
    if not isinstance(value, dict):
        value = {"value": value}
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_PAYLOAD_CHARS:
        return {"truncated": text[:MAX_PAYLOAD_CHARS]}
    return value


def _json_safe(value: Any, depth: int) -> Any:
    """``value`` with only JSON types, NUL-free strings, finite numbers, bounded nesting."""
    if isinstance(value, bytes):
        value = storable_raw(value)
    elif isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSONB has no NaN or Infinity
    elif not isinstance(value, str | bool | int | float | dict | list | tuple | None):
        value = str(value)
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict | list | tuple) and depth >= _MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, dict):
        return {_json_safe(str(k), depth): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def _bounded(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    return value.replace("\x00", "\\x00")[:limit]


def _uuid_or_none(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
