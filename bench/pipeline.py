"""``make bench``: Herald's publishing pipeline against a bare Celery task, in one run.

Measured, all on this machine, same sandbox, same worker shape (prefork, ``--concurrency``):

1. bare        — a Celery task that makes the same HTTP call (no database, no telemetry), on
                 Redis and on RabbitMQ;
2. herald      — dispatch → publish → sandbox → Postgres with telemetry on: every trace
                 sampled, spans and metrics exported over OTLP/HTTP to a receiver the bench
                 starts (bench/otlp_receiver.py, which counts the spans), JSON logs at INFO; on
                 Redis and on RabbitMQ; and once on Redis with one ``publish`` message per post
                 (the posts due at once otherwise go several to a ``publish_many``: decision 42);
3. herald off  — the same with telemetry off (logs at WARNING), on Redis;
4. latency     — posts due at half the measured capacity: delay from ``scheduled_at`` to the
                 sandbox receiving the post (p50, p99), the dispatcher ticking as beat would;
5. memory      — the worker's resident memory (all its processes) after warm-up and after
                 ``--memory-posts`` more posts;
6. fairness    — one workspace with ``--fair-posts`` posts due at once, another workspace's
                 post due at the same moment: that post's delay.

Every throughput phase also reads the CPU time the worker, the Postgres backends of the bench
database, Redis, the sandbox and the OTLP receiver used (/proc accounting) and divides it by
the posts published: steadier than throughput on a shared machine. Redis is shared with
whatever else runs here, so its figure is an upper bound. Ratios are what to read. The last
line printed is one JSON object with the figures of the run.

Needs Postgres, Redis and RabbitMQ (HERALD_BENCH_DATABASE_URL, HERALD_BENCH_REDIS_URL,
HERALD_BENCH_AMQP_URL; local defaults). ``--quick`` scales every count down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx
from celery import Celery
from sqlalchemy import delete, func, insert, select, text

from bench import bare
from bench.processes import CpuMeter, Process, free_port, matching, tree, tree_rss_mb
from herald import db
from herald.celery_app import create_app
from herald.migrations import runner
from herald.models import Post, PostStatus, Workspace, utcnow
from herald.providers.base import Account
from herald.publishing.dispatch import Claimed, commit_and_hand_over, dispatch_due_posts
from herald.publishing.sweep import requeue_lost
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.connect import connect_integration, tokens_from

ADMIN_URL = os.environ.get(
    "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("HERALD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUN = uuid.uuid4().hex[:8]
DB_NAME = f"herald_bench_{RUN}"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
KEY_PREFIX = f"herald-bench-{RUN}:"
VHOST = f"herald-bench-{RUN}"


@dataclass
class Broker:
    """One broker the bench runs on: the URL workers get, and apps to send with."""

    kind: str  # "redis" or "rabbitmq"
    url: str
    prefix: str
    herald: Celery = field(init=False)
    bare: Celery = field(init=False)

    def __post_init__(self) -> None:
        settings = Settings(env="development", broker_url=self.url, broker_key_prefix=self.prefix)
        self.herald = create_app(settings, set_as_current=False)
        self.bare = bare.make_app(self.url, self.prefix)


@dataclass
class Phase:
    """What one measured run did."""

    posts: int
    seconds: float
    cpu_s: dict[str, float]

    @property
    def rate(self) -> float:
        return self.posts / self.seconds

    def cpu_ms_per_post(self) -> dict[str, float]:
        return {k: round(v * 1000 / self.posts, 2) for k, v in self.cpu_s.items()}

    @classmethod
    def combined(cls, phases: Iterable[Phase]) -> Phase:
        """The runs of several rounds as one: posts, time and CPU added up."""
        runs = list(phases)
        cpu: dict[str, float] = {}
        for run in runs:
            for component, seconds in run.cpu_s.items():
                cpu[component] = cpu.get(component, 0.0) + seconds
        return cls(sum(r.posts for r in runs), sum(r.seconds for r in runs), cpu)


def herald_env(
    sandbox_url: str, otlp_url: str, settings: Settings, *, telemetry: bool
) -> dict[str, str]:
    """The environment of a Herald process under the bench: the bench database and sandbox;
    with telemetry, every trace sampled, spans and metrics to ``otlp_url``, JSON logs at INFO;
    without, telemetry off and logs at WARNING."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        {
            "HERALD_ENV": "test",
            "HERALD_DATABASE_URL": DB_URL,
            "HERALD_SANDBOX_URL": sandbox_url,
            "HERALD_PROVIDER_CREDENTIALS": json.dumps({"mastodon": {"client_id": "bench"}}),
            "HERALD_CRON_SECRET": "bench-cron-secret",
            "HERALD_JWT_SECRET": "bench-jwt-secret-0123456789abcdef",
            "HERALD_TOKEN_KEYS": settings.token_keys.get_secret_value(),
            "HERALD_LOG_FORMAT": "json",
            "HERALD_LOG_LEVEL": "INFO" if telemetry else "WARNING",
            "HERALD_TELEMETRY_ENABLED": "true" if telemetry else "false",
            "HERALD_TRACE_SAMPLE_RATIO": "1.0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
    )
    if telemetry:
        env["HERALD_OTLP_ENDPOINT"] = otlp_url
    return env


@dataclass
class Bench:
    sandbox_url: str
    settings: Settings
    workdir: Path
    concurrency: int
    otlp_url: str
    sandbox_pid: int
    receiver_pid: int
    keys: KeyRing
    sandbox: SandboxClient

    # -- environment ---------------------------------------------------------------------------

    def env(self, broker: Broker, *, telemetry: bool) -> dict[str, str]:
        env = herald_env(self.sandbox_url, self.otlp_url, self.settings, telemetry=telemetry)
        env.update(
            {
                "HERALD_BROKER_URL": broker.url,
                "HERALD_BROKER_KEY_PREFIX": broker.prefix,
                "BENCH_BROKER_URL": broker.url,
                "BENCH_KEY_PREFIX": broker.prefix,
            }
        )
        return env

    def herald_worker(self, name: str, broker: Broker, *, telemetry: bool) -> Process:
        return Process.celery(
            "herald.celery_app",
            name,
            "publish,default",
            self.concurrency,
            self.env(broker, telemetry=telemetry),
            self.workdir,
        ).wait_ready(broker.herald)

    def bare_worker(self, broker: Broker) -> Process:
        return Process.celery(
            "bench.bare",
            f"bare-{broker.kind}",
            bare.QUEUE,
            self.concurrency,
            self.env(broker, telemetry=False),
            self.workdir,
        ).wait_ready(broker.bare)

    def meter(self, worker: Process) -> CpuMeter:
        """CPU of every component while ``worker`` runs (see the module docstring)."""
        return CpuMeter(
            {
                "worker": lambda: tree(worker.pid),
                "postgres": lambda: matching(lambda c: c.startswith("postgres: ") and DB_NAME in c),
                "redis": lambda: matching(lambda c: c.startswith("redis-server")),
                "rabbitmq": lambda: matching(lambda c: "beam.smp" in c and "rabbit" in c),
                "sandbox": lambda: tree(self.sandbox_pid),
                "otlp_receiver": lambda: tree(self.receiver_pid),
                # The bench's own process: the dispatcher's loop and the bench's polling (the
                # meter's sampling thread is left out; see Phase).
                "dispatcher": lambda: [os.getpid()],
            }
        )

    # -- data ------------------------------------------------------------------------------------

    def workspace(self, name: str) -> Workspace:
        return new_workspace(name)

    def account(self, ws: Workspace) -> tuple[uuid.UUID, str, str]:
        return connect_account(self.sandbox, self.keys, ws.id)

    def insert_posts(
        self,
        ws: Workspace,
        integration_id: uuid.UUID,
        count: int,
        tag: str,
        *,
        start: datetime | None = None,
        spacing_s: float = 0.0,
    ) -> None:
        insert_posts(ws.id, integration_id, count, tag, start=start, spacing_s=spacing_s)


# -- data ------------------------------------------------------------------------------------------


def new_workspace(name: str) -> Workspace:
    with db.session_scope() as s:
        ws = Workspace(name=name, slug=f"{name.lower()}-{RUN}-{uuid.uuid4().hex[:6]}")
        s.add(ws)
    return ws


def connect_account(
    sandbox: SandboxClient, keys: KeyRing, workspace_id: uuid.UUID
) -> tuple[uuid.UUID, str, str]:
    """A new Mastodon account in the sandbox, connected to the workspace: the integration's id,
    the account's id and its access token."""
    created = sandbox.create_account("mastodon")
    with db.session_scope() as s:
        integration = connect_integration(
            s,
            workspace_id=workspace_id,
            provider="mastodon",
            account=Account(external_id=created["account_id"], handle=created["handle"]),
            tokens=tokens_from(created),
            keys=keys,
        )
        return integration.id, created["account_id"], created["access_token"]


def insert_posts(
    workspace_id: uuid.UUID,
    integration_id: uuid.UUID,
    count: int,
    tag: str,
    *,
    start: datetime | None = None,
    spacing_s: float = 0.0,
    status: PostStatus = PostStatus.SCHEDULED,
) -> list[uuid.UUID]:
    """``count`` posts tagged ``tag`` (in their content and idempotency keys), the first due at
    ``start`` (now), the others ``spacing_s`` apart; their ids."""
    start = start or utcnow()
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [
        {
            "id": ids[i],
            "workspace_id": workspace_id,
            "integration_id": integration_id,
            "content": f"{tag} post {i}",
            "media": [],
            "provider_settings": {},
            "scheduled_at": start + timedelta(seconds=i * spacing_s),
            "status": status,
            "idempotency_key": f"{tag}-{i}",
            "attempts": 0,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for i in range(count)
    ]
    with db.session_scope() as s:
        for chunk in range(0, len(rows), 5000):
            s.execute(insert(Post), rows[chunk : chunk + 5000])
    return ids


def published(tag: str) -> int:
    with db.session_scope() as s:
        return (
            s.scalar(
                select(func.count()).where(
                    Post.status == PostStatus.PUBLISHED, Post.content.like(f"{tag} %")
                )
            )
            or 0
        )


def send(sender: Celery, posts: list[Claimed], *, together: bool = True) -> None:
    """Send the claimed posts' messages as the dispatcher does (the same messages, headers
    and timing: several posts to a ``publish_many`` when many are due at once)."""
    from herald.tasks.publishing import publish_messages

    for _, signature in publish_messages(posts, together=together):
        sender.send_task(str(signature.task), kwargs=signature.kwargs, **signature.options)


def dispatch_until(
    settings: Settings,
    sender: Celery,
    done: Callable[[], bool],
    tick_s: float,
    timeout_s: float,
    *,
    together: bool = True,
) -> float:
    """Run the dispatcher (as beat's ticks would) until ``done()``; the seconds it took."""
    started = time.perf_counter()
    deadline = started + timeout_s
    next_check = next_sweep = started
    while time.perf_counter() < deadline:
        with db.session_scope() as s:  # as dispatch_due does
            dispatch_due_posts(
                s, settings, lambda claimed: send(sender, claimed, together=together)
            )
            if time.perf_counter() >= next_sweep:  # as beat's sweep would: lost messages
                lost = requeue_lost(s, settings)
                commit_and_hand_over(s, lost, lambda posts: send(sender, posts, together=False))
                next_sweep = time.perf_counter() + settings.sweep_interval_s
        if time.perf_counter() >= next_check:
            if done():
                return time.perf_counter() - started
            next_check = time.perf_counter() + 0.25
        time.sleep(tick_s)
    raise TimeoutError(f"not done in {timeout_s} s")


def all_published(tag: str, total: int) -> Callable[[], bool]:
    return lambda: published(tag) >= total


# -- phases ------------------------------------------------------------------------------------


def run_bare(bench: Bench, broker: Broker, ws: Workspace, count: int) -> Phase:
    _, account_id, token = bench.account(ws)
    url = f"{bench.sandbox_url}/mastodon/api/v1/statuses"
    worker = bench.bare_worker(broker)
    try:
        with bench.meter(worker) as meter:
            started = time.perf_counter()
            for i in range(count):
                broker.bare.send_task(
                    "bench.bare.post",
                    args=(url, token, f"bare post {i}", f"bare-{RUN}-{broker.kind}-{i}"),
                    queue=bare.QUEUE,
                )
            while len(bench.sandbox.posts("mastodon", account_id=account_id)) < count:
                if time.perf_counter() - started > 600:
                    raise TimeoutError("bare run did not finish")
                time.sleep(0.25)
            took = time.perf_counter() - started
    finally:
        worker.stop()
    return Phase(count, took, meter.seconds(without_self="dispatcher"))


def run_herald(
    bench: Bench,
    broker: Broker,
    ws: Workspace,
    count: int,
    *,
    telemetry: bool,
    key: str,
    profile: Path | None = None,
    together: bool = True,
) -> Phase:
    """Herald's whole pipeline over ``count`` posts due at once; ``together=False`` sends one
    ``publish`` message per post, as before ``publish_many`` (decision 42)."""
    integration, _, _ = bench.account(ws)
    tag = f"tput-{key}-{RUN}"
    bench.insert_posts(ws, integration, count, tag)
    worker = bench.herald_worker(f"tput-{key}", broker, telemetry=telemetry)
    spy = _py_spy(worker, profile) if profile else None
    try:
        with bench.meter(worker) as meter:
            took = dispatch_until(
                bench.settings,
                broker.herald,
                all_published(tag, count),
                0.2,
                900,
                together=together,
            )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        worker.stop()
    return Phase(count, took, meter.seconds(without_self="dispatcher"))


def _py_spy(worker: Process, out: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or os.environ.get("HERALD_BENCH_PY_SPY")
    if not py_spy:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    argv = [py_spy, "record", "--pid", str(worker.pid), "--subprocesses", "--nonblocking"]
    # --gil: samples only while a thread holds the GIL, so the profile shows CPU, not waiting.
    argv += ["--gil", "--rate", "250", "--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return spy


def delays_of(tag: str, account_id: str, sandbox: SandboxClient) -> list[float]:
    with db.session_scope() as s:
        scheduled = {
            str(pid): at
            for pid, at in s.execute(
                select(Post.id, Post.scheduled_at).where(Post.content.like(f"{tag} %"))
            )
        }
    return sorted(
        (datetime.fromisoformat(p["created_at"]) - scheduled[p["idempotency_key"]]).total_seconds()
        for p in sandbox.posts("mastodon", account_id=account_id)
        if p["idempotency_key"] in scheduled
    )


def latency(bench: Bench, broker: Broker, ws: Workspace, capacity: float) -> dict[str, float]:
    rate = max(0.5, capacity / 2)
    count = int(rate * 20)
    integration, account_id, _ = bench.account(ws)
    tag = f"lat-{RUN}"
    worker = bench.herald_worker("latency", broker, telemetry=True)
    tick = bench.settings.dispatch_interval_s
    try:
        # Inserted once the worker is up: its start-up is not the dispatcher's delay.
        start = utcnow() + timedelta(seconds=3)
        bench.insert_posts(ws, integration, count, tag, start=start, spacing_s=1 / rate)
        dispatch_until(bench.settings, broker.herald, all_published(tag, count), tick, 600)
    finally:
        worker.stop()
    delays = delays_of(tag, account_id, bench.sandbox)
    with db.session_scope() as s:  # when a worker claimed each post: dispatch and queue only
        to_claim = sorted(
            (started - at).total_seconds()
            for started, at in s.execute(
                select(Post.publishing_started_at, Post.scheduled_at).where(
                    Post.content.like(f"{tag} %")
                )
            )
            if started is not None
        )
    p50, p99 = _percentile(delays, 0.5), _percentile(delays, 0.99)
    claim50, claim99 = _percentile(to_claim, 0.5), _percentile(to_claim, 0.99)
    print(
        f"delay scheduled_at -> sandbox at {rate:.1f} posts/s (half capacity), "
        f"beat tick {tick:.1f} s:  p50 {p50:.2f} s   p99 {p99:.2f} s   ({len(delays)} posts)\n"
        f"  of which scheduled_at -> a worker claims it:  p50 {claim50:.2f} s   p99 {claim99:.2f} s"
    )
    return {"rate": rate, "p50": p50, "p99": p99, "claim_p50": claim50, "claim_p99": claim99}


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.median(values)
        if q == 0.5
        else values[min(len(values) - 1, int(len(values) * q))]
    )


def memory(bench: Bench, broker: Broker, ws: Workspace, count: int) -> float:
    integration, _, _ = bench.account(ws)
    worker = bench.herald_worker("memory", broker, telemetry=True)
    try:
        warm = f"warm-{RUN}"
        bench.insert_posts(ws, integration, 500, warm)
        dispatch_until(bench.settings, broker.herald, all_published(warm, 500), 0.2, 600)
        before = tree_rss_mb(worker.pid)
        tag = f"mem-{RUN}"
        bench.insert_posts(ws, integration, count, tag)
        took = dispatch_until(bench.settings, broker.herald, all_published(tag, count), 0.2, 3600)
        after = tree_rss_mb(worker.pid)
    finally:
        worker.stop()
    print(
        f"worker memory (all processes) after warm-up {before:7.1f} MiB, after {count} more posts "
        f"{after:7.1f} MiB  (x{after / before:.2f}; {count / took:.0f} posts/s)"
    )
    return after / before


def fairness(bench: Bench, broker: Broker, count: int, timeout_s: float) -> float | None:
    """The delay of one workspace's post due at the moment another workspace has ``count``
    posts due (None: not published within ``timeout_s``)."""
    busy, quiet = bench.workspace("Busy"), bench.workspace("Quiet")
    busy_integration, _, _ = bench.account(busy)
    quiet_integration, quiet_account, _ = bench.account(quiet)
    worker = bench.herald_worker("fairness", broker, telemetry=True)
    tick = bench.settings.dispatch_interval_s
    tag = f"quiet-{RUN}"
    try:
        start = utcnow()
        bench.insert_posts(busy, busy_integration, count, f"busy-{RUN}", start=start)
        bench.insert_posts(quiet, quiet_integration, 1, tag, start=start)
        # Measured from when the bulk is in place: inserting it is not the dispatcher's delay.
        offset = (utcnow() - start).total_seconds()
        dispatch_until(bench.settings, broker.herald, all_published(tag, 1), tick, timeout_s)
        delay: float | None = delays_of(tag, quiet_account, bench.sandbox)[0] - offset
    except TimeoutError:
        delay = None
    finally:
        worker.stop()
        with db.session_scope() as s:  # the rest of the bulk is not this bench's business
            s.execute(delete(Post).where(Post.workspace_id == busy.id))
    shown = f"{delay:.2f} s" if delay is not None else f"> {timeout_s:.0f} s"
    print(
        f"fairness: a post due alongside another workspace's {count} posts, beat tick "
        f"{tick:.1f} s: published after {shown}"
    )
    return delay


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Servers:
    """What a bench runs against: its own database (migrated, Herald's engine pointed at it),
    the sandbox and the OTLP receiver, each in a process of its own."""

    workdir: Path
    sandbox_url: str
    otlp_url: str
    sandbox_pid: int
    receiver_pid: int
    settings: Settings
    sandbox: SandboxClient


@contextmanager
def servers(prefix: str) -> Iterator[Servers]:
    """Start :class:`Servers`; stop them and drop the database afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    port, otlp_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    sandbox_proc = Process.command(
        [sys.executable, "-m", "herald.cli", "sandbox", "--port", str(port)],
        "sandbox",
        env,
        workdir,
    )
    receiver = Process.command(
        [sys.executable, "-m", "bench.otlp_receiver", "--port", str(otlp_port)],
        "otlp-receiver",
        env,
        workdir,
    )
    try:
        runner.upgrade(DB_URL)
        db.use_engine(db.make_engine(DB_URL))
        url, otlp_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{otlp_port}"
        _wait_http(url + "/_sandbox/health")
        _wait_http(otlp_url + "/count")
        settings = Settings(env="development", database_url=DB_URL).with_sandbox(url)
        sandbox = SandboxClient(url, timeout_s=60)
        try:
            sandbox.set_rate_limit("mastodon", 10_000_000, 60)
            yield Servers(workdir, url, otlp_url, sandbox_proc.pid, receiver.pid, settings, sandbox)
        finally:
            sandbox.close()
    finally:
        receiver.stop()
        sandbox_proc.stop()
        db.get_engine().dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=2000, help="posts per throughput run")
    parser.add_argument("--memory-posts", type=int, default=20_000)
    parser.add_argument("--fair-posts", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bare / telemetry on / telemetry off on Redis (order reversed every other "
        "round); each ratio is the median of the rounds' own ratios",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to leave out: latency, memory, fairness",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="measure only the delay, with posts due at this rate (posts/s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the worker with py-spy during the first round's telemetry-on run (collapsed "
        "stacks here; summarise with python -m bench.profile)",
    )
    parser.add_argument(
        "--profile-off",
        type=Path,
        help="the same for the first round's telemetry-off run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="500 posts per run, 2,000 for memory, 5,000 for fairness",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.posts, args.memory_posts, args.fair_posts = 500, 2000, 5000

    amqp_url = _create_vhost()
    try:
        with servers("herald-bench-") as up:
            bench = Bench(
                up.sandbox_url,
                up.settings,
                up.workdir,
                args.concurrency,
                up.otlp_url,
                up.sandbox_pid,
                up.receiver_pid,
                KeyRing.from_settings(up.settings),
                up.sandbox,
            )
            redis_broker = Broker("redis", REDIS_URL, KEY_PREFIX)
            rabbit_broker = Broker("rabbitmq", amqp_url, "")
            report(bench, redis_broker, rabbit_broker, args)
    finally:
        _purge_redis()
        _delete_vhost()
    return 0


def report(bench: Bench, redis: Broker, rabbit: Broker, args: argparse.Namespace) -> None:
    n = args.posts
    print(
        f"bench: {n} posts per run, worker concurrency {bench.concurrency}, "
        f"{os.cpu_count()} CPUs, run {RUN}\n"
    )
    ws = bench.workspace("Bench")
    phases: dict[str, Phase] = {}

    def show(key: str, label: str, phase: Phase) -> None:
        phases[key] = phase
        cpu = phase.cpu_ms_per_post()
        print(
            f"{label:38} {phase.rate:7.1f} posts/s  ({phase.posts} in {phase.seconds:5.1f} s)  "
            f"CPU ms/post: worker {cpu['worker']:.1f}, postgres {cpu['postgres']:.1f}, "
            f"redis {cpu['redis']:.1f}, rabbitmq {cpu['rabbitmq']:.1f}, "
            f"sandbox {cpu['sandbox']:.1f}, dispatcher {cpu['dispatcher']:.1f}"
        )

    if args.latency_rate:  # the latency phase alone, at a given rate
        print(json.dumps(latency(bench, redis, ws, 2 * args.latency_rate)))
        return
    # Each round runs its three phases back to back, so a ratio compares runs minutes apart at
    # most; the machine's pace drifts more than that over a whole bench.
    rounds: list[dict[str, Phase]] = []
    spans = 0
    for r in range(args.rounds):
        ran: dict[str, Phase] = {}
        order = ["bare_redis", "herald_on", "herald_off"]
        for what in order if r % 2 == 0 else order[::-1]:
            suffix = f" ({r + 1}/{args.rounds})" if args.rounds > 1 else ""
            if what == "bare_redis":
                ran[what] = run_bare(bench, redis, ws, n)
                label = "bare celery task, redis"
            elif what == "herald_on":
                before = _spans(bench) if r == 0 else 0
                profile = args.profile if r == 0 else None
                ran[what] = run_herald(
                    bench, redis, ws, n, telemetry=True, key=f"on{r}", profile=profile
                )
                spans = _spans(bench) - before if r == 0 else spans
                label = "herald, telemetry on, redis"
            else:
                profile = args.profile_off if r == 0 else None
                ran[what] = run_herald(
                    bench, redis, ws, n, telemetry=False, key=f"off{r}", profile=profile
                )
                label = "herald, telemetry off, redis"
            show(what, label + suffix, ran[what])
        rounds.append(ran)
    for what in rounds[0]:
        phases[what] = Phase.combined(r[what] for r in rounds)
    show("bare_rabbitmq", "bare celery task, rabbitmq", run_bare(bench, rabbit, ws, n))
    show(
        "herald_on_rabbitmq",
        "herald, telemetry on, rabbitmq",
        run_herald(bench, rabbit, ws, n, telemetry=True, key="rmq"),
    )
    show(
        "herald_on_one_per_message",
        "herald, telemetry on, one post a message",
        run_herald(bench, redis, ws, n, telemetry=True, key="single", together=False),
    )
    print(f"spans received by the OTLP receiver (telemetry on, redis): {spans / n:.1f} per post")

    over_bare = [r["herald_on"].rate / r["bare_redis"].rate for r in rounds]
    on_over_off = [r["herald_on"].rate / r["herald_off"].rate for r in rounds]
    rmq_ratio = phases["herald_on_rabbitmq"].rate / phases["bare_rabbitmq"].rate
    single_ratio = phases["herald_on_one_per_message"].rate / phases["bare_redis"].rate
    cpu_on = phases["herald_on"].cpu_ms_per_post()["worker"]
    cpu_off = phases["herald_off"].cpu_ms_per_post()["worker"]
    if args.rounds > 1:
        print(
            "\nby round: herald/bare "
            + " ".join(f"{x:.2f}" for x in over_bare)
            + ", telemetry on/off "
            + " ".join(f"{x:.2f}" for x in on_over_off)
            + " (the medians below)"
        )
    median_over_bare = statistics.median(over_bare)
    median_on_over_off = statistics.median(on_over_off)
    print(f"\nratio herald (telemetry on)/bare, redis     {median_over_bare:5.2f}  (goal >= 0.5)")
    print(f"ratio herald (telemetry on)/bare, rabbitmq  {rmq_ratio:5.2f}")
    print(f"ratio herald one post a message/bare, redis {single_ratio:5.2f}  (no publish_many)")
    print(f"ratio telemetry on/off (every trace)        {median_on_over_off:5.2f}  (goal >= 0.9)")
    print(f"worker CPU per post, telemetry off/on        {cpu_off / cpu_on:5.2f}\n")
    on_r = phases["herald_on"].rate

    skip = set(args.skip.split(","))
    lat = latency(bench, redis, ws, on_r) if "latency" not in skip else {"p50": -1, "p99": -1}
    growth = memory(bench, redis, ws, args.memory_posts) if "memory" not in skip else -1
    fair_timeout = max(60.0, 3 * bench.settings.dispatch_interval_s * 10)
    other = fairness(bench, redis, args.fair_posts, fair_timeout) if "fairness" not in skip else -1

    figures: dict[str, Any] = {
        "herald_over_bare": round(median_over_bare, 3),
        "herald_over_bare_rabbitmq": round(rmq_ratio, 3),
        "herald_one_per_message_over_bare": round(single_ratio, 3),
        "telemetry_on_over_off": round(median_on_over_off, 3),
        "rounds": {
            "herald_over_bare": [round(x, 3) for x in over_bare],
            "telemetry_on_over_off": [round(x, 3) for x in on_over_off],
        },
        "worker_cpu_off_over_on": round(cpu_off / cpu_on, 3),
        "delay_p50_s": round(lat["p50"], 3),
        "delay_p99_s": round(lat["p99"], 3),
        "claim_delay_p50_s": round(lat.get("claim_p50", -1), 3),
        "claim_delay_p99_s": round(lat.get("claim_p99", -1), 3),
        "other_workspace_delay_s": round(other, 3) if other is not None else None,
        "memory_growth": round(growth, 3),
        "posts_per_s": {k: round(p.rate, 1) for k, p in phases.items()},
        "cpu_ms_per_post": {
            k: {c: v for c, v in p.cpu_ms_per_post().items() if v > 0} for k, p in phases.items()
        },
        "spans_per_post": round(spans / n, 2),
        "posts": n,
        "memory_posts": args.memory_posts,
        "fair_posts": args.fair_posts,
        "cpus": os.cpu_count(),
    }
    print()
    print(json.dumps(figures, sort_keys=True))


def _spans(bench: Bench) -> int:
    time.sleep(6)  # the batch span processor exports every 5 s
    return int(httpx.get(bench.otlp_url + "/count", timeout=10).json()["spans"])


def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("the bench needs rabbitmqctl to make a RabbitMQ virtual host")
    subprocess.run([ctl, *args], capture_output=True, timeout=120, check=True)


def _create_vhost() -> str:
    """A RabbitMQ virtual host of this run's own (deleted at the end)."""
    parsed = urlparse(AMQP_URL)
    _rabbitmqctl("add_vhost", VHOST)
    _rabbitmqctl("set_permissions", "-p", VHOST, parsed.username or "guest", ".*", ".*", ".*")
    netloc = parsed.netloc
    return f"amqp://{netloc}/{quote(VHOST, safe='')}"


def _delete_vhost() -> None:
    try:
        _rabbitmqctl("delete_vhost", VHOST)
    except (RuntimeError, subprocess.SubprocessError):
        print(f"could not delete RabbitMQ vhost {VHOST}", file=sys.stderr)


def _purge_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=KEY_PREFIX + "*"):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    sys.exit(main())
