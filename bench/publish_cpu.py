"""CPU per publish in one process, telemetry on against off: where ``make bench``'s worker
time goes, without the broker, the pool or the machine's noise in the way.

``make bench-cpu`` creates a database, starts the sandbox and the OTLP receiver, then runs
``herald.posts.publish`` eagerly (``Task.apply``: Celery's tracer and signals, the task base,
the instrumentations) in a child process per mode, posts already queued, and reads the
child's own CPU clock (all its threads, the span and metric exporters included) over the
measured posts:

- ``off``: telemetry off, logs at WARNING (the pipeline bench's "telemetry off");
- ``on``: every trace sampled, spans and metrics over OTLP/HTTP, JSON logs at INFO.

``--many 10`` publishes the posts ten to a ``herald.posts.publish_many`` message, as the
dispatcher sends a backlog (the path ``make bench`` measures). Modes alternate for
``--rounds`` rounds and the median of each is printed with their ratio.
``--by-part`` adds runs with telemetry on but one part left out (an instrumentation, span
export, Herald's metrics over OTLP, the log line, the correlation attributes, the span
redaction): the difference is that part's cost.
``--instructions`` counts each child's instructions under valgrind instead of its CPU time:
about 40 times slower (use a few hundred ``--posts``), but the same figure from run to run
on a shared machine, where CPU time per publish moves by a quarter; each figure is the
difference of a run of ``--posts`` posts and one of a fifth of them, so start-up cancels out.
``--profile`` adds a cProfile of one ``on`` round (``--profile-mode off``: of one ``off``
round): top functions, cumulative and by own time. The HTTP call
and Postgres run in other processes; their CPU is not in these figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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
#: A child run under valgrind for ``--instructions``: instructions counted, no cache simulated.
VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
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


def _instructions(stderr: str) -> float:
    """The instructions a run under :data:`VALGRIND` executed (its summary's ``I refs``)."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{stderr[-2000:]}")
    return float(found.group(1).replace(",", ""))


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
            processors()._span_processors = ()
        elif part == "correlation":  # no correlation attributes on every span
            from herald.telemetry.spans import CorrelatedSampler

            def inner_only(self: CorrelatedSampler, *args: Any, **kwargs: Any) -> Any:
                return self.inner.should_sample(*args, **kwargs)

            CorrelatedSampler.should_sample = inner_only  # type: ignore[method-assign]
        elif part == "redaction":  # spans exported as they are
            from herald.telemetry.otlp import SpanEncoder
            from herald.telemetry.spans import RedactingSpanExporter

            batch = processors()._span_processors[-1]._batch_processor
            if isinstance(batch._exporter, RedactingSpanExporter):
                batch._exporter = batch._exporter.inner
            else:  # Herald's OTLP exporter, redacting as it encodes
                batch._exporter._encoder = SpanEncoder()
        elif part == "log":
            logging.getLogger().setLevel(logging.WARNING)
        elif part:
            raise SystemExit(f"unknown part {part!r}")


def child(
    ids_file: Path, telemetry: bool, profile: Path | None, without: list[str], many: int
) -> None:
    """Publish every post of ``ids_file`` as a worker's pool process would (``many`` > 1:
    that many to a ``publish_many`` message, as the dispatcher sends a backlog); print CPU
    ms/post."""
    from herald.celery_app import _init_worker_process, app
    from herald.settings import get_settings
    from herald.telemetry.logging import configure_logging
    from herald.telemetry.tracing import shutdown_telemetry

    configure_logging(get_settings())
    _init_worker_process()
    app.loader.import_default_modules()
    _knock_out(without)
    task = app.tasks["herald.posts.publish_many" if many > 1 else "herald.posts.publish"]

    def messages(ids: list[str]) -> list[dict[str, Any]]:
        if many == 1:
            return [{"post_id": post_id} for post_id in ids]
        chunks = [ids[i : i + many] for i in range(0, len(ids), many)]
        return [{"posts": [{"post_id": post_id} for post_id in chunk]} for chunk in chunks]

    ids = ids_file.read_text().split()
    for kwargs in messages(ids[:WARM_UP]):
        task.apply(kwargs=kwargs, throw=True)
    measured = ids[WARM_UP:]
    to_send = messages(measured)
    profiler = cProfile.Profile(time.process_time) if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for kwargs in to_send:
        task.apply(kwargs=kwargs, throw=True)
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
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="the parts --by-part leaves out, comma-separated (default: all of "
        + ", ".join(PARTS)
        + ")",
    )
    parser.add_argument(
        "--many",
        type=int,
        default=1,
        help="posts per message: 1 runs herald.posts.publish, more runs "
        "herald.posts.publish_many (as the dispatcher sends a backlog)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions (valgrind's cachegrind) instead of CPU time: about 40 times "
        "slower, but the same figure on a noisy machine; each figure is the difference of a "
        "run of --posts and one of a fifth of them",
    )
    parser.add_argument("--without", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parts = [part for part in args.parts.split(",") if part]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"unknown parts: {', '.join(unknown)}")
    if args.instructions and args.posts < 5:
        parser.error("--instructions needs --posts of at least 5 (it also runs a fifth of them)")
    if args.child:
        child(args.ids, args.child == "on", args.profile, args.without.split(","), args.many)
        return 0

    # (label, mode, parts left out)
    runs = [("off", "off", ""), ("on", "on", "")]
    if args.by_part:
        runs += [(f"on without {part}", "on", part) for part in parts]
    results: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    unit = "M instructions" if args.instructions else "CPU ms"
    with servers("herald-bench-cpu-") as up:

        def measure(label: str, mode: str, without: str, posts: int, round_: int) -> float:
            """One child's figure: CPU ms per publish, or its whole run's instructions."""
            ids = _queue_posts(up, WARM_UP + posts)
            ids_file = up.workdir / f"{round_}-{label}-{posts}.ids".replace(" ", "-")
            ids_file.write_text("\n".join(ids))
            argv_ = [sys.executable, "-m", "bench.publish_cpu", "--child", mode]
            argv_ += ["--ids", str(ids_file), "--without", without, "--many", str(args.many)]
            if args.profile and label == args.profile_mode and round_ == 0:
                argv_ += ["--profile", str(args.profile)]
            if args.instructions:
                argv_ = [*VALGRIND, *argv_]
            env = herald_env(up.sandbox_url, up.otlp_url, up.settings, telemetry=mode == "on")
            done = subprocess.run(argv_, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{label} run failed:\n{done.stderr[-4000:]}")
            if args.instructions:
                return _instructions(done.stderr)
            return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu_ms_per_post"])

        for round_ in range(args.rounds):
            for label, mode, without in runs:
                if args.instructions:  # the difference of two sizes: start-up cancels out
                    small = max(1, args.posts // 5)
                    with ThreadPoolExecutor(2) as pool:  # counts are not disturbed by sharing
                        sizes = [
                            pool.submit(measure, label, mode, without, n, round_)
                            for n in (small, args.posts)
                        ]
                        few, many = (size.result() for size in sizes)
                    figure = (many - few) / (args.posts - small) / 1e6
                else:
                    figure = measure(label, mode, without, args.posts, round_)
                results[label].append(figure)
                print(f"round {round_ + 1} {label}: {figure:.3f} {unit} per publish", flush=True)
    medians = {m: round(statistics.median(v), 3) for m, v in results.items()}
    key = "minstr_per_publish" if args.instructions else "cpu_ms_per_publish"
    summary: dict[str, object] = {
        key: medians,
        "telemetry": round(medians["on"] - medians["off"], 3),
        "off_over_on": round(medians["off"] / medians["on"], 3),
    }
    if args.by_part:
        summary["part"] = {
            part: round(medians["on"] - medians[f"on without {part}"], 3) for part in parts
        }
    print(json.dumps(summary))
    if args.profile:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
