"""Celery's and kombu's lines as Herald renders them."""

from __future__ import annotations

import io
import json
import logging

import amqp

from herald.settings import Settings, get_settings
from herald.telemetry.logging import configure_logging


def _ack_failure_line(
    error: Exception, message: str = "Couldn't ack %r, reason:%r"
) -> dict[str, object]:
    """What Celery logs when a message's ack (or reject) raises ``error``, rendered."""
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json"), stream=stream)
    try:
        try:
            raise error
        except Exception as raised:
            logging.getLogger("celery.worker.request").critical(message, 7, raised, exc_info=True)
    finally:
        configure_logging(get_settings())
    (line,) = stream.getvalue().splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


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
