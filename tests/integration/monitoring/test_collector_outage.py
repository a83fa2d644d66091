"""A collector that is down or never answers costs a stopping process at most
``HERALD_TELEMETRY_FLUSH_TIMEOUT_S``; one that is up still gets what was buffered.

Each case is a real process (Herald's telemetry set up as the API and the workers set it up)
that records spans and metrics, then exits: on its own (the interpreter's exit hooks) or
through ``shutdown_telemetry`` first (a worker process's shutdown signal).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.fixtures.external import free_port
from tests.fixtures.monitoring import ROOT, OtlpSink
from tests.fixtures.servers import silent_server

FLUSH_TIMEOUT_S = 1.0

_RUN = """
import sys
from herald.settings import Settings
from herald.telemetry import metrics
from herald.telemetry.tracing import setup_telemetry, shutdown_telemetry, tracer
setup_telemetry(Settings(), component="api")
for _ in range(600):
    with tracer.start_as_current_span("work"):
        metrics.publish_attempts.add(1, {"provider": "mastodon", "outcome": "published"})
if sys.argv[1] == "signal":
    shutdown_telemetry()
"""


def _exit_time(endpoint: str, how: str) -> float:
    env = {
        "HERALD_OTLP_ENDPOINT": endpoint,
        "HERALD_TELEMETRY_FLUSH_TIMEOUT_S": str(FLUSH_TIMEOUT_S),
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin",
    }
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", _RUN, how], env=env, check=True, timeout=120, cwd=ROOT)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def exit_allowance() -> float:
    """How long the process may take to end: twice the same process without exporting, on this
    machine now (its start varies by seconds on a loaded machine), plus the flush bound twice
    over and some slack: still well under the 20-50 s a process took before the bound."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", _RUN, "exit"],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin", "HERALD_TELEMETRY_ENABLED": "false"},
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    return (time.monotonic() - started) * 2 + FLUSH_TIMEOUT_S * 2 + 3


@pytest.mark.parametrize(("collector", "how"), [("silent", "exit"), ("absent", "signal")])
def test_a_silent_or_absent_collector_holds_an_exiting_process_no_longer_than_the_flush_bound(
    collector: str, how: str, exit_allowance: float
) -> None:
    # Before the bound, each took 20-50 s: the SDK flushes for as long as its retries last.
    if collector == "silent":
        with silent_server() as (port, _):
            took = _exit_time(f"http://127.0.0.1:{port}", how)
    else:
        took = _exit_time(f"http://127.0.0.1:{free_port()}", how)
    assert took < exit_allowance, f"a {collector} collector held the exit {took:.1f} s"


def test_a_collector_that_is_up_gets_what_an_exiting_process_buffered(
    otlp_sink: OtlpSink,
) -> None:
    _exit_time(otlp_sink.url, "exit")
    assert otlp_sink.received("/v1/traces"), "no span reached the collector"
    assert otlp_sink.received("/v1/metrics"), "no metric reached the collector"
