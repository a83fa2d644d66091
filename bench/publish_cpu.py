"""CPU per publish in one process, telemetry on against off: where ``make bench``'s worker
time goes, without the broker, the pool or the machine's noise in the way.

``make bench-cpu`` creates a database, starts the sandbox and the OTLP receiver, then runs
``herald.posts.publish`` eagerly (``Task.apply``: Celery's tracer and signals, the task base,
the instrumentations) in a child process per mode, posts already queued, and reads the
child's own CPU clock (all its threads, the span and metric exporters included) over the
measured posts:

- ``off``: telemetry off, logs at WARNING (the pipeline bench's "telemetry off");
- ``on``: every trace sampled, spans and metrics over OTLP/HTTP, JSON logs at INFO.

Modes alternate for ``--rounds`` rounds and the median of each is printed with their ratio.
``--by-part`` adds runs with telemetry on but one part left out (an instrumentation, span
export, Herald's metrics over OTLP, the log line, the correlation attributes, the span
redaction): the difference is that part's cost.
``--profile`` adds a cProfile of one ``on`` round (``--profile-mode off``: of one ``off``
round): top functions, cumulative and by own time. The HTTP call
and Postgres run in other processes; their CPU is not in these figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.pipeline import (
    Servers,
    connect_account,
    herald_env,
    insert_posts,
    new_workspace,
    servers,
)
from herald.models import PostStatus
from herald.security.crypto import KeyRing

WARM_UP = 200
#: Telemetry's parts, each of which ``--by-part`` leaves out in turn (see :func:`_knock_out`).
PARTS = (
    "celery",
    "sqlalchemy",
    "httpx",
    "export",
    "otel-metrics",
    "log",
    "correlation",
    "redaction",
)


def _queue_posts(servers: Servers, count: int) -> list[str]:
    """``count`` posts of a new workspace and account, queued and due (as the dispatcher
    leaves them)."""
    ws = new_workspace("cpu")
    integration, _, _ = connect_account(
        servers.sandbox, KeyRing.from_settings(servers.settings), ws.id
    )
    tag = f"cpu-{uuid.uuid4().hex[:8]}"
    return [str(i) for i in insert_posts(ws.id, integration, count, tag, status=PostStatus.QUEUED)]


def _knock_out(parts: list[str]) -> None:
    """Turn the named parts of telemetry off (SDK internals reached into: a bench's licence)."""
    import logging

    from opentelemetry import trace

    from herald.telemetry import metrics

    def processors() -> Any:  # the SDK's list of span processors (telemetry on only)
        return trace.get_tracer_provider()._active_span_processor  # type: ignore[attr-defined]

    for part in parts:
        if part == "sqlalchemy":
            from herald.telemetry.statements import untrace_statements

            untrace_statements()
        elif part == "httpx":
            from herald.telemetry.http_spans import HTTPSpans

            HTTPSpans().uninstrument()
        elif part == "celery":
            from opentelemetry.instrumentation.celery import CeleryInstrumentor

            CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        elif part == "otel-metrics":
            metrics.record_to_otel(False)
        elif part == "export":  # spans still made, never exported
            processors()._span_processors = processors()._span_processors[:1]
        elif part == "correlation":  # no correlation attributes on every span
            processors()._span_processors = processors()._span_processors[1:]
        elif part == "redaction":  # spans exported as they are
            batch = processors()._span_processors[-1]._batch_processor
            batch._exporter = batch._exporter.inner
        elif part == "log":
            logging.getLogger().setLevel(logging.WARNING)
        elif part:
            raise SystemExit(f"unknown part {part!r}")


def child(ids_file: Path, telemetry: bool, profile: Path | None, without: list[str]) -> None:
    """Publish every post of ``ids_file`` as a worker's pool process would; print CPU ms/post."""
    from herald.celery_app import _init_worker_process, app
    from herald.settings import get_settings
    from herald.telemetry.logging import configure_logging
    from herald.telemetry.tracing import shutdown_telemetry

    configure_logging(get_settings())
    _init_worker_process()
    app.loader.import_default_modules()
    _knock_out(without)
    publish = app.tasks["herald.posts.publish"]
    ids = ids_file.read_text().split()
    for post_id in ids[:WARM_UP]:
        publish.apply(kwargs={"post_id": post_id}, throw=True)
    measured = ids[WARM_UP:]
    profiler = cProfile.Profile(time.process_time) if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for post_id in measured:
        publish.apply(kwargs={"post_id": post_id}, throw=True)
    shutdown_telemetry()  # what is still buffered is exported on this clock
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(profile))
    took = time.process_time() - started
    print(json.dumps({"cpu_ms_per_post": took * 1000 / len(measured)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=1500, help="posts per run (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="cProfile of one run here (--profile-mode)")
    parser.add_argument(
        "--profile-mode", choices=["on", "off"], default="on", help="the mode --profile profiles"
    )
    parser.add_argument(
        "--by-part",
        action="store_true",
        help="also run 'on' with each part of telemetry left out in turn, and print what each "
        "part costs (the difference)",
    )
    parser.add_argument("--without", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.ids, args.child == "on", args.profile, args.without.split(","))
        return 0

    # (label, mode, parts left out)
    runs = [("off", "off", ""), ("on", "on", "")]
    if args.by_part:
        runs += [(f"on without {part}", "on", part) for part in PARTS]
    results: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    with servers("herald-bench-cpu-") as up:
        for round_ in range(args.rounds):
            for label, mode, without in runs:
                ids = _queue_posts(up, WARM_UP + args.posts)
                ids_file = up.workdir / f"{round_}.ids"
                ids_file.write_text("\n".join(ids))
                argv_ = [sys.executable, "-m", "bench.publish_cpu", "--child", mode]
                argv_ += ["--ids", str(ids_file), "--without", without]
                if args.profile and label == args.profile_mode and round_ == 0:
                    argv_ += ["--profile", str(args.profile)]
                env = herald_env(up.sandbox_url, up.otlp_url, up.settings, telemetry=mode == "on")
                done = subprocess.run(argv_, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{label} run failed:\n{done.stderr[-4000:]}")
                line = done.stdout.strip().splitlines()[-1]
                figure = json.loads(line)["cpu_ms_per_post"]
                results[label].append(figure)
                print(f"round {round_ + 1} {label}: {figure:.3f} CPU ms per publish", flush=True)
    medians = {m: round(statistics.median(v), 3) for m, v in results.items()}
    summary: dict[str, object] = {
        "cpu_ms_per_publish": medians,
        "telemetry_ms": round(medians["on"] - medians["off"], 3),
        "off_over_on": round(medians["off"] / medians["on"], 3),
    }
    if args.by_part:
        summary["part_ms"] = {
            part: round(medians["on"] - medians[f"on without {part}"], 3) for part in PARTS
        }
    print(json.dumps(summary))
    if args.profile:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
