"""A process whose metrics port another process holds (a second beat or worker on one host
with the same HERALD_METRICS_PORT) refuses to start with one line that says so, not a
traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from herald.cli import cli
from herald.settings import get_settings, use_settings


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_beat_whose_metrics_port_is_taken_says_so_in_one_line(held_port: int) -> None:
    before = get_settings()
    use_settings(before.model_copy(update={"metrics_port": held_port, "metrics_host": "127.0.0.1"}))
    try:
        result = CliRunner().invoke(cli, ["beat"])
    finally:
        use_settings(before)
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{held_port}" in result.output
    assert "HERALD_METRICS_PORT" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, OSError)
