"""Celery's and kombu's lines as Herald renders them."""

from __future__ import annotations

import io
import json
import logging

import amqp
from billiard.exceptions import WorkerLostError

from herald.settings import Settings, get_settings
from herald.telemetry.logging import configure_logging


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
