"""Errors in log lines: the class and the driver's first line, never the SQL statement."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from herald.telemetry.errors import describe_error
from tests.fixtures.servers import free_port


def test_a_database_error_is_its_class_and_the_drivers_first_line() -> None:
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    error_type, message = describe_error(caught.value)
    assert error_type == "OperationalError"
    assert "\n" not in message
    assert "[SQL" not in message
    assert "sqlalche.me" not in message
    assert len(message) <= 200


def test_a_long_message_is_cut_and_redacted() -> None:
    error_type, message = describe_error(ValueError("Bearer abcdefghijklmnopqrs " + "x" * 500))
    assert error_type == "ValueError"
    assert "abcdefghijklmnopqrs" not in message
    assert len(message) == 200
