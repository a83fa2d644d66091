from __future__ import annotations

import io
import json
import logging

import structlog

from herald.settings import Settings, get_settings
from herald.telemetry.logging import REDACTED, configure_logging, redact_text, redact_value


def test_secret_keys_are_redacted_at_any_depth() -> None:
    event = {
        "access_token": "at-123",
        "nested": {"refresh_token": "rt-456", "list": [{"client_secret": "cs"}], "ok": "keep"},
        "error_code": "rate_limited",
        "status_code": 429,
    }
    out = redact_value(event)
    assert out["access_token"] == REDACTED
    assert out["nested"]["refresh_token"] == REDACTED
    assert out["nested"]["list"][0]["client_secret"] == REDACTED
    assert out["nested"]["ok"] == "keep"
    assert out["error_code"] == "rate_limited"
    assert out["status_code"] == 429


def test_secrets_inside_free_text_are_redacted() -> None:
    text = (
        "Authorization: Bearer abcdefgh12345678 then "
        "https://host/cb?code=xyz&state=s&access_token=tok GET /bot123456:ABC-def_ghi/sendMessage"
    )
    out = redact_text(text)
    for secret in ("abcdefgh12345678", "code=xyz", "access_token=tok", "123456:ABC-def_ghi"):
        assert secret not in out
    assert "state=s" in out


def test_log_lines_never_carry_a_token() -> None:
    stream = io.StringIO()
    configure_logging(Settings(_env_file=None, log_format="json"), stream=stream)
    try:
        log = structlog.get_logger("t")
        log.info("refreshed", refresh_token="rt-secret", note="Bearer tok12345678")
        logging.getLogger("foreign").warning("token=abc123 leaked by a library")
    finally:
        configure_logging(get_settings())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "rt-secret" not in text
    assert "tok12345678" not in text
    assert "abc123" not in text
    assert lines[0]["refresh_token"] == REDACTED
