"""``make bench``: Herald's publishing pipeline against a bare Celery task, in one run.

Measured, all on this machine, same broker, same sandbox, same worker shape:

1. bare      — a Celery task that makes the same HTTP call (no database, no telemetry);
2. herald    — dispatch → publish → sandbox → Postgres, telemetry on (spans to a file,
               JSON logs at INFO);
3. herald-nt — the same with telemetry off;
4. latency   — posts due at half the measured capacity: delay from ``scheduled_at`` to the
               sandbox receiving the post (p50, p99);
5. memory    — the worker's resident memory (all its processes) after warm-up and after
               ``--memory-posts`` posts.

Ratios are what to read: herald/bare (goal ≥ 0.5) and off/on telemetry (goal ≥ 0.9 means
telemetry costs under 10%). Needs Postgres and Redis (HERALD_BENCH_DATABASE_URL,
HERALD_BENCH_REDIS_URL; local defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from bench.processes import Process, free_port, tree_rss_mb
from herald import db
from herald.migrations import runner
from herald.models import Post, PostStatus, Workspace, utcnow
from herald.providers.base import Account
from herald.publishing.dispatch import claim_due_posts
from herald.publishing.sweep import requeue_lost
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.connect import connect_integration, tokens_from

ADMIN_URL = os.environ.get(
    "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:8]
DB_NAME = f"herald_bench_{RUN}"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
KEY_PREFIX = f"herald-bench-{RUN}:"


@dataclass
class Bench:
    sandbox_url: str
    settings: Settings
    workdir: Path
    concurrency: int

    # -- environment ---------------------------------------------------------------------------

    def env(self, *, telemetry: bool, sample_ratio: float = 1.0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            {
                "HERALD_ENV": "test",
                "HERALD_DATABASE_URL": DB_URL,
                "HERALD_BROKER_URL": REDIS_URL,
                "HERALD_BROKER_KEY_PREFIX": KEY_PREFIX,
                "HERALD_SANDBOX_URL": self.sandbox_url,
                "HERALD_PROVIDER_CREDENTIALS": json.dumps({"mastodon": {"client_id": "bench"}}),
                "HERALD_CRON_SECRET": "bench-cron-secret",
                "HERALD_JWT_SECRET": "bench-jwt-secret-0123456789abcdef",
                "HERALD_TOKEN_KEYS": self.settings.token_keys.get_secret_value(),
                "HERALD_LOG_FORMAT": "json",
                "HERALD_LOG_LEVEL": "INFO" if telemetry else "WARNING",
                "HERALD_TELEMETRY_ENABLED": "true" if telemetry else "false",
                "HERALD_TRACE_SAMPLE_RATIO": str(sample_ratio),
                "BENCH_BROKER_URL": REDIS_URL,
                "BENCH_KEY_PREFIX": KEY_PREFIX,
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            }
        )
        if telemetry:
            env["HERALD_TRACE_FILE"] = str(self.workdir / "spans.jsonl")
        return env

    def herald_worker(self, name: str, *, telemetry: bool, sample_ratio: float = 1.0) -> Process:
        from herald.celery_app import app

        return Process.celery(
            "herald.celery_app",
            name,
            "publish,default",
            self.concurrency,
            self.env(telemetry=telemetry, sample_ratio=sample_ratio),
            self.workdir,
        ).wait_ready(app)

    def bare_worker(self) -> Process:
        from bench.bare import app

        return Process.celery(
            "bench.bare",
            "bare",
            "bench-bare",
            self.concurrency,
            self.env(telemetry=False),
            self.workdir,
        ).wait_ready(app)

    # -- data ------------------------------------------------------------------------------------

    def account(
        self, sandbox: SandboxClient, keys: KeyRing, ws: Workspace
    ) -> tuple[uuid.UUID, str, str]:
        created = sandbox.create_account("mastodon")
        with db.session_scope() as s:
            integration = connect_integration(
                s,
                workspace_id=ws.id,
                provider="mastodon",
                account=Account(external_id=created["account_id"], handle=created["handle"]),
                tokens=tokens_from(created),
                keys=keys,
            )
            return integration.id, created["account_id"], created["access_token"]

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
        start = start or utcnow()
        rows = [
            {
                "id": uuid.uuid4(),
                "workspace_id": ws.id,
                "integration_id": integration_id,
                "content": f"{tag} post {i}",
                "media": [],
                "provider_settings": {},
                "scheduled_at": start + timedelta(seconds=i * spacing_s),
                "status": "scheduled",
                "idempotency_key": f"{tag}-{i}",
                "attempts": 0,
                "created_at": utcnow(),
                "updated_at": utcnow(),
            }
            for i in range(count)
        ]
        with db.session_scope() as s:
            for chunk in range(0, len(rows), 5000):
                s.execute(Post.__table__.insert(), rows[chunk : chunk + 5000])


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


def dispatch_until(
    settings: Settings, tag: str, total: int, tick_s: float, timeout_s: float
) -> float:
    """Run the dispatcher (as beat would) until ``total`` posts of ``tag`` are published."""
    from herald.tasks.publishing import publish_signature

    started = time.perf_counter()
    deadline = started + timeout_s
    next_check = next_sweep = started
    while time.perf_counter() < deadline:
        with db.session_scope() as s:
            claimed = claim_due_posts(s, settings)
            if time.perf_counter() >= next_sweep:  # as beat's sweep would: lost messages
                claimed += requeue_lost(s, settings)
                next_sweep = time.perf_counter() + settings.sweep_interval_s
        for post in claimed:
            publish_signature(post).apply_async()
        if time.perf_counter() >= next_check:
            if published(tag) >= total:
                return time.perf_counter() - started
            next_check = time.perf_counter() + 0.25
        time.sleep(tick_s)
    raise TimeoutError(f"{tag}: only {published(tag)} of {total} published in {timeout_s} s")


def run_bare(
    bench: Bench, sandbox: SandboxClient, token: str, account_id: str, count: int
) -> float:
    from bench.bare import post

    url = f"{bench.sandbox_url}/mastodon/api/v1/statuses"
    before = len(sandbox.posts("mastodon", account_id=account_id))
    worker = bench.bare_worker()
    try:
        started = time.perf_counter()
        for i in range(count):
            post.apply_async(args=(url, token, f"bare post {i}", f"bare-{RUN}-{i}"))
        while len(sandbox.posts("mastodon", account_id=account_id)) - before < count:
            if time.perf_counter() - started > 600:
                raise TimeoutError("bare run did not finish")
            time.sleep(0.25)
        return time.perf_counter() - started
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=2000, help="posts per throughput run")
    parser.add_argument("--memory-posts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ["BENCH_BROKER_URL"] = REDIS_URL  # read by bench.bare when it is imported
    os.environ["BENCH_KEY_PREFIX"] = KEY_PREFIX

    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    port = free_port()
    sandbox_proc = Process.command(
        [sys.executable, "-m", "herald.cli", "sandbox", "--port", str(port)],
        "sandbox",
        {**os.environ},
        workdir,
    )
    try:
        runner.upgrade(DB_URL)
        db.use_engine(db.make_engine(DB_URL))
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/_sandbox/health")
        settings = Settings(env="development", database_url=DB_URL).with_sandbox(url)
        from herald.celery_app import app
        from herald.embedded import configure_app

        configure_app(
            app,
            settings.model_copy(update={"broker_url": REDIS_URL, "broker_key_prefix": KEY_PREFIX}),
        )
        bench = Bench(url, settings, workdir, args.concurrency)
        sandbox = SandboxClient(url, timeout_s=60)
        sandbox.set_rate_limit("mastodon", 10_000_000, 60)
        keys = KeyRing.from_settings(settings)
        with db.session_scope() as s:
            ws = Workspace(name="Bench", slug=f"bench-{RUN}")
            s.add(ws)
        report(bench, sandbox, keys, ws, args)
        sandbox.close()
    finally:
        sandbox_proc.stop()
        db.get_engine().dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        _purge_redis()
    return 0


def report(
    bench: Bench, sandbox: SandboxClient, keys: KeyRing, ws: Workspace, args: argparse.Namespace
) -> None:
    n = args.posts
    print(
        f"bench: {n} posts per run, worker concurrency {bench.concurrency}, {os.cpu_count()} CPUs\n"
    )

    integration, account_id, token = bench.account(sandbox, keys, ws)
    bare_s = run_bare(bench, sandbox, token, account_id, n)
    bare_rate = n / bare_s
    print(f"{'bare celery task':34} {bare_rate:8.1f} posts/s  ({n} in {bare_s:.1f} s)")

    runs = (
        ("on", "herald, telemetry on (every trace)", True, 1.0),
        ("sampled", "herald, telemetry on (10% traces)", True, 0.1),
        ("off", "herald, telemetry off", False, 1.0),
    )
    rates: dict[str, float] = {}
    for key, label, telemetry, ratio in runs:
        integration, _, _ = bench.account(sandbox, keys, ws)
        tag = f"tput-{key}-{RUN}"
        bench.insert_posts(ws, integration, n, tag)
        worker = bench.herald_worker(f"tput-{key}", telemetry=telemetry, sample_ratio=ratio)
        try:
            took = dispatch_until(bench.settings, tag, n, 0.2, 900)
        finally:
            worker.stop()
        rates[key] = n / took
        print(f"{label:34} {rates[key]:8.1f} posts/s  ({n} in {took:.1f} s)")

    on, off, sampled = rates["on"], rates["off"], rates["sampled"]
    print(f"\nratio herald (telemetry on)/bare        {on / bare_rate:5.2f}  (goal >= 0.5)")
    print(f"ratio telemetry on/off (every trace)   {on / off:5.2f}  (goal >= 0.9)")
    print(f"ratio telemetry on/off (10% of traces) {sampled / off:5.2f}\n")

    latency(bench, sandbox, keys, ws, rates["on"])
    memory(bench, sandbox, keys, ws, args.memory_posts)


def latency(
    bench: Bench, sandbox: SandboxClient, keys: KeyRing, ws: Workspace, capacity: float
) -> None:
    rate = max(1.0, capacity / 2)
    count = int(rate * 20)
    integration, account_id, _ = bench.account(sandbox, keys, ws)
    tag = f"lat-{RUN}"
    start = utcnow() + timedelta(seconds=2)
    bench.insert_posts(ws, integration, count, tag, start=start, spacing_s=1 / rate)
    worker = bench.herald_worker("latency", telemetry=True)
    tick = bench.settings.dispatch_interval_s
    try:
        dispatch_until(bench.settings, tag, count, tick, 600)
    finally:
        worker.stop()
    with db.session_scope() as s:
        scheduled = {
            str(pid): at
            for pid, at in s.execute(
                select(Post.id, Post.scheduled_at).where(Post.content.like(f"{tag} %"))
            )
        }
    delays = sorted(
        (datetime.fromisoformat(p["created_at"]) - scheduled[p["idempotency_key"]]).total_seconds()
        for p in sandbox.posts("mastodon", account_id=account_id)
        if p["idempotency_key"] in scheduled
    )
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(
        f"delay scheduled_at -> sandbox at {rate:.0f} posts/s (half capacity), "
        f"beat tick {tick:.1f} s:  p50 {p50:.2f} s   p99 {p99:.2f} s   ({len(delays)} posts)\n"
    )


def memory(bench: Bench, sandbox: SandboxClient, keys: KeyRing, ws: Workspace, count: int) -> None:
    integration, _, _ = bench.account(sandbox, keys, ws)
    worker = bench.herald_worker("memory", telemetry=True)
    try:
        warm = f"warm-{RUN}"
        bench.insert_posts(ws, integration, 500, warm)
        dispatch_until(bench.settings, warm, 500, 0.2, 600)
        before = tree_rss_mb(worker.pid)
        tag = f"mem-{RUN}"
        bench.insert_posts(ws, integration, count, tag)
        took = dispatch_until(bench.settings, tag, count, 0.2, 3600)
        after = tree_rss_mb(worker.pid)
    finally:
        worker.stop()
    print(
        f"worker memory (all processes) after warm-up {before:7.1f} MiB, after {count} more posts "
        f"{after:7.1f} MiB  (x{after / before:.2f}; {count / took:.0f} posts/s)"
    )


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


def _purge_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=KEY_PREFIX + "*"):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    sys.exit(main())
