"""``python -m bench.instruments``: the cost of recording one measurement, in µs.

Herald's instruments (``herald/telemetry/metrics.py``) record to OpenTelemetry and to
prometheus_client at once, on the hot path of every task and every publish. This measures a
counter ``add`` and a histogram ``record`` with the labels the call sites use, in three set-ups
of one process, both set up by ``setup_telemetry``: without an OTLP endpoint (Prometheus only)
and with a metric reader attached (as with ``HERALD_OTLP_ENDPOINT``), each with
prometheus_client in-process and in multiprocess mode (as under ``herald worker`` with a
metrics port).
Each set-up runs in a fresh interpreter, since prometheus_client picks its mode at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

RECORDS = 200_000

_PROBE = """
import json, os, sys, time
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from herald.settings import Settings
from herald.telemetry import metrics as m
from herald.telemetry.tracing import setup_telemetry
readers = [InMemoryMetricReader()] if sys.argv[1] == "otlp" else []
setup_telemetry(Settings(), metric_readers=readers)
n = int(sys.argv[2])
labels = {"task": "herald.posts.publish", "queue": "publish"}
for name, record in (
    ("counter", lambda: m.task_events["started"].add(1, labels)),
    ("histogram", lambda: m.task_runtime.record(0.042, labels)),
):
    record()
    started = time.perf_counter()
    for _ in range(n):
        record()
    print(json.dumps({"name": name, "us": (time.perf_counter() - started) / n * 1e6}))
"""


def measure(otel: str, multiprocess: bool) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, otel, str(RECORDS)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return {row["name"]: row["us"] for row in map(json.loads, out.splitlines())}


def main() -> None:
    started = time.monotonic()
    print(f"{'set-up':<44} {'counter µs':>11} {'histogram µs':>13}")
    for otel, label in (("none", "no OTLP endpoint"), ("otlp", "OTel SDK + a reader")):
        for multiprocess in (False, True):
            mode = "prometheus multiprocess" if multiprocess else "prometheus in-process"
            result = measure(otel, multiprocess)
            print(
                f"{label + ', ' + mode:<44} {result['counter']:>11.2f} {result['histogram']:>13.2f}"
            )
    print(f"({RECORDS:,} records each; {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
