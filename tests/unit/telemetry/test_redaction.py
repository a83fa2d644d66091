"""Log lines pass through the one redaction (herald/redaction.py, tested in
tests/unit/test_redaction.py) whoever wrote them and at whatever level."""

from __future__ import annotations

import io
import json
import logging

import httpx
import structlog

from herald.settings import Settings, get_settings
from herald.telemetry.logging import REDACTED, configure_logging


def test_log_lines_never_carry_a_token() -> None:
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json", log_level="DEBUG"), stream=stream)
    try:
        log = structlog.get_logger("t")
        log.info("refreshed", refresh_token="rt-secret", note="Bearer tok12345678")
        logging.getLogger("foreign").warning("token=abc123 leaked by a library")
        # httpx writes the full URL at INFO and httpcore the headers at DEBUG.
        logging.getLogger("httpx").info(
            "HTTP Request: POST http://127.0.0.1:8765/telegram/bottg-at-Sx1_secret-path/sendMessage"
            ' "HTTP/1.1 200 OK"'
        )
        logging.getLogger("httpx").debug(
            "HTTP Request: POST https://discord.com/api/webhooks/42/wh-Sx2secretpath?wait=true"
        )
        logging.getLogger("httpcore.http11").debug(
            "send_request_headers.started request=[(b'Authorization', b'Bearer Sx3secret')]"
        )
        logging.getLogger("httpx").info(
            "HTTP Request: GET https://graph.threads.net/v1.0/me?access_token=Sx4secret&fields=id"
        )
    finally:
        configure_logging(get_settings())
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    for secret in ("rt-secret", "tok12345678", "abc123", "Sx1", "Sx2", "Sx3", "Sx4"):
        assert secret not in text
    assert lines[0]["refresh_token"] == REDACTED
    assert len(lines) == 6


def test_a_caller_cannot_slip_a_secret_in_under_a_field_herald_fills_after_redaction() -> None:
    """Level, logger, time and trace ids are added after redaction (they cannot hold a
    secret); a value a caller passes under one of those names is redacted or overwritten."""
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json", log_level="DEBUG"), stream=stream)
    try:
        structlog.get_logger("t").info(
            "odd",
            trace_id="Bearer Sx5secret",  # no span is active: nothing overwrites it
            level="token=Sx6secret",
            timestamp="token=Sx7secret",
            logger="token=Sx8secret",
        )
        try:
            raise RuntimeError("password=Sx9secret")
        except RuntimeError:
            structlog.get_logger("t").exception("failed")
    finally:
        configure_logging(get_settings())
    text = stream.getvalue()
    for secret in ("Sx5", "Sx6", "Sx7", "Sx8", "Sx9"):
        assert secret not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert (first["level"], first["logger"]) == ("info", "t")
    assert first["timestamp"].endswith("Z")
    assert first["trace_id"] != "Bearer Sx5secret"
    assert "RuntimeError" in second["exception"]


def test_http_client_lines_at_debug_name_only_the_origin_and_the_event() -> None:
    """A URL a user gave (a Slack incoming webhook, a webhook receiver) keeps its secret in the
    path, where no rule can see it; httpcore's lines carry raw headers (a redirect's
    Location). At DEBUG, httpx's lines keep the method, origin and status, httpcore's the event
    name only."""
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json", log_level="DEBUG"), stream=stream)
    try:
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "POST",
            httpx.URL("https://hooks.slack.com/services/T0/B0/Sy1secretpath?x=1"),
            "HTTP/1.1",
            307,
            "Temporary Redirect",
        )
        logging.getLogger("httpcore.http11").debug(
            "receive_response_headers.complete return_value=(b'HTTP/1.1', 307, b'Temporary"
            " Redirect', [(b'Location', b'https://hooks.example/Sy2secretpath')])"
        )
    finally:
        configure_logging(get_settings())
    text = stream.getvalue()
    assert "Sy1" not in text
    assert "Sy2" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert (
        first["event"]
        == 'HTTP Request: POST https://hooks.slack.com "HTTP/1.1 307 Temporary Redirect"'
    )
    assert second["event"] == "receive_response_headers.complete"
