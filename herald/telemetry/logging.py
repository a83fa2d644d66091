"""Structured logging: structlog for our lines, the stdlib bridge for Celery's and kombu's.

Every line carries the correlation context (bound by :mod:`herald.telemetry.context`) and the
active span's trace and span ids, then passes through :func:`redact` (the rules of
:mod:`herald.redaction`) before it is rendered, so a token that slips into an event dict or a
library's message never reaches the output, at any level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar, TextIO

import structlog
from opentelemetry import trace

from herald.redaction import REDACTED, is_secret_key, redact_text, redact_value
from herald.settings import Settings

# The redaction rules live in herald.redaction (shared with spans and stored errors); these
# names stay importable from here.
__all__ = [
    "REDACTED",
    "add_trace_ids",
    "build_formatter",
    "configure_logging",
    "is_secret_key",
    "redact",
    "redact_text",
    "redact_value",
]


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
    # Redaction reads what the caller and the context supplied (the event, its fields, an
    # exception's text); the fields computed after it (level, logger, time, trace ids) cannot
    # hold a secret, and a value a caller passed under one of their names was redacted first.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.format_exc_info,
        redact,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]


def build_formatter(settings: Settings) -> logging.Formatter:
    """The formatter every Herald handler uses: structlog's, for our lines and foreign ones."""
    renderer = _renderer(settings)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


class AckOnALostConnection(logging.Filter):
    """Celery logs an acknowledgement (or a rejection) that failed because the broker
    connection is gone as CRITICAL, with a traceback. For Herald that is ordinary after a broker
    restart or a dropped connection: the broker hands the unsettled message out again (RabbitMQ
    at once, Redis after its visibility timeout; or the message was lost with the broker and the
    sweep sends its post again), and the run it gets finds its work done (a post already claimed
    is never published twice). Such a line becomes one WARNING that says so, without the
    traceback.
    """

    _SAID_INSTEAD: ClassVar[dict[str, str]] = {
        # kombu.message.Message.ack_log_error / reject_log_error, as Celery's requests call them
        "Couldn't ack %r, reason:%r": (
            "Couldn't ack %r: the connection that delivered it is gone (%r); the broker "
            "delivers it again and that run finds its work done"
        ),
        "Couldn't reject %r, reason: %r": (
            "Couldn't reject %r: the connection that delivered it is gone (%r); the broker "
            "delivers it again"
        ),
    }

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        instead = self._SAID_INSTEAD.get(record.msg) if isinstance(record.msg, str) else None
        if instead is not None and isinstance(error, _connection_errors()):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = instead
            record.exc_info, record.exc_text = None, None
        return True


class LostProcessWithoutTraceback(logging.Filter):
    """Celery logs a pool process that died under a task ("Task handler raised error:
    WorkerLostError(...)") with a traceback of billiard's own bookkeeping, which says nothing
    about why the process died. The line keeps its level and text (which names the signal or
    exit code); the traceback goes. Herald's ``task.process_lost`` line says which task, message
    and process it was."""

    _MESSAGE = "Task handler raised error: %r"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self._MESSAGE and isinstance(record.args, tuple) and record.args:
            from billiard.exceptions import Terminated, WorkerLostError

            if isinstance(record.args[0], WorkerLostError | Terminated):
                record.exc_info, record.exc_text = None, None
        return True


class HTTPClientLines(logging.Filter):
    """What the HTTP client libraries may say, at DEBUG (at INFO they are at WARNING).

    A URL a user gave (a Slack incoming webhook, a webhook receiver, a media host) keeps its
    secret in the path, where no redaction rule can see it, and httpcore's lines are the repr
    of raw requests and headers (a redirect's ``Location``). So httpx's lines keep each URL's
    origin only (method, origin and status stay; spans have the rest, redacted), and httpcore's
    lines their event name only (``receive_response_headers.complete``).
    """

    _URL = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s\"'?#]+)[^\s\"']*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "httpx" or record.name.startswith("httpx."):
            said = self._URL.sub(r"\1", record.getMessage())
        elif record.name == "httpcore" or record.name.startswith("httpcore."):
            said = record.getMessage().split(" ", 1)[0]
        else:
            return True
        record.msg, record.args = said, ()
        if "message" in record.__dict__:  # formatted already by a handler before this one
            record.message = said
        return True


def _connection_errors() -> tuple[type[BaseException], ...]:
    import amqp
    import kombu.exceptions
    import redis.exceptions

    return (
        OSError,
        amqp.ConnectionError,
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
    )


class _Output:
    """What ``configure_logging`` set up last: Herald's handler, its formatter and filter, and
    the renderer of Herald's lines (read at every line, so cached loggers follow a
    reconfiguration)."""

    handler: logging.StreamHandler[TextIO] | None = None
    formatter: logging.Formatter | None = None
    filter: logging.Filter | None = None
    renderer: Any = None


def _stdlib_untouched(logger: logging.Logger) -> bool:
    """Whether stdlib logging would do nothing for this logger's records beyond its handlers:
    no record factory of someone else's, no ``handle``/``callHandlers`` replaced (Sentry's
    logging integration patches ``Logger.callHandlers``; it adds no handler)."""
    kind = type(logging.getLogger()), type(logger)
    return logging.getLogRecordFactory() is logging.LogRecord and all(
        getattr(cls.handle, "__module__", None) == "logging"
        and getattr(cls.callHandlers, "__module__", None) == "logging"
        for cls in kind
    )


class _Destination:
    """What a Herald logger writes to (structlog's "logger"): the rendered line straight to
    Herald's handler when stdlib logging would do nothing else with it (the usual case: that
    handler alone would receive it, with its own formatter and filter, no filter on the logger,
    stdlib's classes as they ship); otherwise (an operator's handler or filter, Sentry's logging
    integration, a test's capture) the event to that stdlib logger, as structlog's stdlib
    integration does, so everything that hooks stdlib logging sees it."""

    __slots__ = ("name", "std")

    def __init__(self, name: str) -> None:
        self.name = name
        self.std = logging.getLogger(name)

    def direct(self, level: int) -> logging.StreamHandler[TextIO] | None:
        """Herald's handler, when writing the line to it is all stdlib logging would do."""
        ours = _Output.handler
        if (
            ours is None
            or self.std.filters
            or ours.formatter is not _Output.formatter
            or ours.filters != [_Output.filter]
            or not _stdlib_untouched(self.std)
        ):
            return None
        found = None
        logger: logging.Logger | None = self.std
        while logger is not None:
            for handler in logger.handlers:
                if handler is not ours or level < handler.level:
                    return None
                found = handler
            if not logger.propagate:
                break
            logger = logger.parent
        return found

    def write(self, line: str) -> None:
        handler = _Output.handler
        if handler is None:
            return
        with handler.lock or nullcontext():
            try:
                handler.stream.write(line + handler.terminator)
                handler.flush()
            except Exception:
                handler.handleError(logging.makeLogRecord({"msg": line}))

    def hand_over(self, level: int, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.std.log(level, *args, **kwargs)


class HeraldLogger(structlog.BoundLoggerBase):
    """The bound logger of Herald's lines: a line below its stdlib logger's level costs one
    check (no processor runs), a line above it is rendered once and written (see
    :class:`_Destination`). The methods are the stdlib ``BoundLogger``'s that Herald uses."""

    _logger: _Destination

    def _emit(self, level: int, method: str, event: str | None, args: Any, kw: Any) -> None:
        if not self._logger.std.isEnabledFor(level):
            return
        if args:  # stdlib-style positional arguments, as a LogRecord merges them
            if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
                args = args[0]
            try:
                event = str(event) % args
            except (TypeError, ValueError, KeyError):
                kw["positional_args"] = args
        direct = self._logger.direct(level)
        kw["_herald_direct"] = direct is not None
        try:
            rendered, handed = self._process_event(method, event, kw)
        except structlog.DropEvent:
            return
        if direct is not None:
            self._logger.write(rendered[0])
        else:
            self._logger.hand_over(level, rendered, handed)

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        self._emit(logging.INFO, "info", event, args, kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        self._emit(logging.WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        self._emit(logging.ERROR, "error", event, args, kw)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._emit(logging.ERROR, "error", event, args, kw)

    def critical(self, event: str | None = None, *args: Any, **kw: Any) -> None:
        self._emit(logging.CRITICAL, "critical", event, args, kw)


def _final(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The last processor: render the line for a direct write, or wrap the event for the
    stdlib formatter (which renders it the same way)."""
    if event_dict.pop("_herald_direct", False):
        return _Output.renderer(logger, method, event_dict)
    return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method, event_dict)


def _renderer(settings: Settings) -> Any:
    if settings.log_format == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one formatter. Safe to call again."""
    structlog.configure(
        # A line below the level is dropped first, before any processor (redaction included).
        processors=[*_shared_processors(), _final],
        logger_factory=_Destination,
        wrapper_class=HeraldLogger,
        # Loggers are cached: what a later call changes (the handler, the renderer, the level)
        # is read at each line, and the processors are the same functions every time.
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = build_formatter(settings)
    handler.setFormatter(formatter)
    handler.set_name("herald")
    only = HTTPClientLines()
    handler.addFilter(only)
    _Output.handler, _Output.formatter, _Output.filter = handler, formatter, only
    _Output.renderer = _renderer(settings)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "herald":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    requests = logging.getLogger("celery.worker.request")
    for installed in list(requests.filters):
        if isinstance(installed, AckOnALostConnection | LostProcessWithoutTraceback):
            requests.removeFilter(installed)
    requests.addFilter(AckOnALostConnection())
    requests.addFilter(LostProcessWithoutTraceback())
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
