"""Celery's and kombu's lines as Herald renders them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
import pytest
import structlog
from billiard.exceptions import WorkerLostError

from herald.settings import Settings, get_settings
from herald.telemetry import context
from herald.telemetry.logging import _Destination, configure_logging


def _request_line(level: int, message: str, *args: object, error: Exception) -> dict[str, object]:
    """A line Celery's request logger writes while handling ``error``, rendered."""
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json"), stream=stream)
    try:
        try:
            raise error
        except Exception:
            logging.getLogger("celery.worker.request").log(level, message, *args, exc_info=True)
    finally:
        configure_logging(get_settings())
    (line,) = stream.getvalue().splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


def _ack_failure_line(
    error: Exception, message: str = "Couldn't ack %r, reason:%r"
) -> dict[str, object]:
    """What Celery logs when a message's ack (or reject) raises ``error``, rendered."""
    return _request_line(logging.CRITICAL, message, 7, error, error=error)


def test_an_ack_on_a_lost_connection_is_one_warning_without_a_traceback() -> None:
    line = _ack_failure_line(amqp.RecoverableConnectionError("connection already closed"))
    assert line["level"] == "warning"
    assert "the connection that delivered it is gone" in str(line["event"])
    assert "exception" not in line


def test_an_ack_that_fails_for_another_reason_stays_critical_with_its_traceback() -> None:
    line = _ack_failure_line(ValueError("not a connection problem"))
    assert line["level"] == "critical"
    assert "Traceback" in str(line["exception"])


def test_a_reject_on_a_lost_connection_is_one_warning_too() -> None:
    line = _ack_failure_line(
        ConnectionResetError("reset by peer"), message="Couldn't reject %r, reason: %r"
    )
    assert line["level"] == "warning"
    assert str(line["event"]).startswith("Couldn't reject 7: the connection")


def test_a_lost_pool_process_is_one_error_line_without_billiards_traceback() -> None:
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")
    line = _request_line(logging.ERROR, "Task handler raised error: %r", lost, error=lost)
    assert line["level"] == "error"
    assert "signal 9 (SIGKILL)" in str(line["event"])
    assert "exception" not in line


def test_another_task_handler_error_keeps_its_traceback() -> None:
    other = ValueError("a bug in a handler")
    line = _request_line(logging.ERROR, "Task handler raised error: %r", other, error=other)
    assert "Traceback" in str(line["exception"])


# Herald's own lines: written straight to Herald's handler when it alone would receive them,
# handed to stdlib logging when another handler would.

_HERALD = structlog.get_logger("herald.tests.logging")  # cached on first use, as in the code


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@contextmanager
def _alone() -> Iterator[None]:
    """Herald's handler alone on the root logger, as in a worker: pytest's capture handlers
    (added around each test's call) set aside, else every line would take the stdlib path."""
    root = logging.getLogger()
    aside = [handler for handler in root.handlers if handler.get_name() != "herald"]
    for handler in aside:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in aside:
            root.addHandler(handler)


@pytest.fixture
def herald_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json"), stream=stream)
    try:
        with context.correlated("corr-logging-test", workspace_id="ws-logging-test"):
            yield stream
    finally:
        configure_logging(get_settings())


def _direct() -> bool:
    return _Destination("herald.tests.logging").direct(logging.INFO) is not None


def test_a_herald_line_is_one_json_line_with_its_context(herald_stream: io.StringIO) -> None:
    with _alone():
        assert _direct()
        _HERALD.info("publish.attempt", post_id="p-1", token="s3cr3t-value", attempt=1)
        _HERALD.debug("below the level")
        (line,) = _lines(herald_stream)
        assert line["event"] == "publish.attempt"
        assert line["level"] == "info"
        assert line["logger"] == "herald.tests.logging"
        assert (line["correlation_id"], line["workspace_id"]) == (
            "corr-logging-test",
            "ws-logging-test",
        )
        assert (line["post_id"], line["attempt"]) == ("p-1", 1)
        assert line["token"] == "[REDACTED]"
        assert "timestamp" in line
        assert "_herald_direct" not in line


def test_an_exception_line_carries_its_traceback(herald_stream: io.StringIO) -> None:
    with _alone():
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            _HERALD.exception("task.failed", task="t")
        (line,) = _lines(herald_stream)
        assert line["level"] == "error"
        assert "RuntimeError: boom" in line["exception"]


def test_a_level_set_later_and_a_new_stream_apply_to_a_cached_logger(
    herald_stream: io.StringIO,
) -> None:
    with _alone():
        _HERALD.info("first")
        logging.getLogger().setLevel(logging.WARNING)
        _HERALD.info("dropped")
        _HERALD.warning("kept")
        other = io.StringIO()
        configure_logging(Settings(_env_file=None, log_format="json"), stream=other)
        _HERALD.info("to the new stream")
        assert [line["event"] for line in _lines(herald_stream)] == ["first", "kept"]
        assert [line["event"] for line in _lines(other)] == ["to the new stream"]


def test_another_handler_receives_herald_lines_too(herald_stream: io.StringIO) -> None:
    """An operator's handler (Sentry's logging integration, a file) sees Herald's lines as
    stdlib records, rendered the same way by Herald's formatter, once each."""
    with _alone():
        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        keep = Keep()
        logging.getLogger("herald").addHandler(keep)
        try:
            _HERALD.error("network.down", provider="x", password="hunter22")
        finally:
            logging.getLogger("herald").removeHandler(keep)
        _HERALD.info("after")
        (record,) = seen
        assert record.levelno == logging.ERROR
        lines = _lines(herald_stream)
        assert [line["event"] for line in lines] == ["network.down", "after"]
        assert lines[0]["password"] == "[REDACTED]"
        assert lines[0]["logger"] == "herald.tests.logging"


def test_a_cached_logger_follows_a_change_of_format(herald_stream: io.StringIO) -> None:
    with _alone():
        _HERALD.info("as json")
        console = io.StringIO()
        configure_logging(Settings(_env_file=None, log_format="console"), stream=console)
        assert _direct()
        _HERALD.info("as console", post_id="p-2")
        assert [line["event"] for line in _lines(herald_stream)] == ["as json"]
        (line,) = console.getvalue().splitlines()
        assert "as console" in line
        assert "post_id=p-2" in line
        assert not line.startswith("{")


def test_a_filter_on_the_logger_is_applied(herald_stream: io.StringIO) -> None:
    with _alone():

        class DropAll(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                return False

        drop = DropAll()
        std = logging.getLogger("herald.tests.logging")
        std.addFilter(drop)
        try:
            assert not _direct()
            _HERALD.warning("filtered out")
        finally:
            std.removeFilter(drop)
        _HERALD.warning("kept")
        assert [line["event"] for line in _lines(herald_stream)] == ["kept"]


def test_a_hook_on_stdlib_logging_sees_herald_lines(
    herald_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Sentry's logging integration does: it wraps ``Logger.callHandlers`` and adds no
    handler. Herald's lines then take the stdlib path, through the wrapper."""
    with _alone():
        seen: list[str] = []
        original = logging.Logger.callHandlers

        def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
            seen.append(record.levelname)
            original(self, record)

        monkeypatch.setattr(logging.Logger, "callHandlers", call_handlers)
        assert not _direct()
        _HERALD.error("network.down")
        monkeypatch.undo()
        assert seen == ["ERROR"]
        assert [line["event"] for line in _lines(herald_stream)] == ["network.down"]


def test_positional_arguments_are_merged_as_stdlib_merges_them(herald_stream: io.StringIO) -> None:
    with _alone():
        _HERALD.info("sent %d of %s", 3, "posts")
        _HERALD.info("sent %(n)d", {"n": 4})
        _HERALD.info("no placeholder", 5)  # would fail to merge: kept beside the event
        lines = _lines(herald_stream)
        assert [line["event"] for line in lines] == ["sent 3 of posts", "sent 4", "no placeholder"]
        assert lines[2]["positional_args"] == [5]
