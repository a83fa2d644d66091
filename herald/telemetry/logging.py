"""Structured logging: structlog for our lines, the stdlib bridge for Celery's and kombu's.

Every line carries the correlation context (bound by :mod:`herald.telemetry.context`) and the
active span's trace and span ids, then passes through :func:`redact` before it is rendered, so
a token that slips into an event dict never reaches the output.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from herald.settings import Settings

REDACTED = "[REDACTED]"

# Keys whose value is a secret wherever they appear (compared lower-case).
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "password",
        "app_password",
        "secret",
        "client_secret",
        "cron_secret",
        "authorization",
        "cookie",
        "set-cookie",
        "code",
        "code_verifier",
        "api_key",
        "apikey",
        "private_key",
        "accessjwt",
        "refreshjwt",
    }
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_key_material", "_ciphertext")
# Secrets embedded in free text: bearer/basic credentials, key=value pairs in URLs or bodies,
# and Telegram's bot token in a path. Each pattern runs only if its trigger is in the text
# (most values are ids and words with none), which keeps redaction cheap on the hot path.
_TEXT_PATTERNS = (
    (" ", re.compile(r"(?i)\b(bearer|basic|bot)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (
        "=",
        re.compile(
            r"(?i)\b(access_token|refresh_token|client_secret|code|code_verifier|password|token)"
            r"=[^&\s\"']+"
        ),
        r"\1=" + REDACTED,
    ),
    ("/bot", re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"), r"\1" + REDACTED),
)


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or lowered.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    for trigger, pattern, replacement in _TEXT_PATTERNS:
        if trigger in text:
            text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """Redact secrets inside any JSON-like value (dicts by key, strings by pattern)."""
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last word before rendering."""
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


def add_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.format_exc_info,
        redact,
    ]


def build_formatter(settings: Settings) -> logging.Formatter:
    """The formatter every Herald handler uses: structlog's, for our lines and foreign ones."""
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one formatter. Safe to call again."""
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(build_formatter(settings))
    handler.set_name("herald")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "herald":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Chatty libraries stay at WARNING unless debugging. Celery's "received" and "succeeded"
    # lines are replaced by Herald's task.* lines, which carry the correlation context.
    for noisy in (
        "httpx",
        "httpcore",
        "amqp",
        "kombu",
        "urllib3",
        "celery.app.trace",
        "celery.worker.strategy",
    ):
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
        )
