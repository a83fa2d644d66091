"""``make bench-alerts``: what alert evaluation, health and ``/metrics`` cost as history grows.

In a throwaway Postgres database it bulk-loads attempt history with ``generate_series`` (one
INSERT … SELECT per table, secondary indexes built after the load) across 1,000 workspaces, at a
constant rate of attempts per hour, so the rules' windows (a minute to an hour) hold the same
number of rows at every size:

1. 1 million publish attempts over the newest 18 days, then measure;
2. 4 million more over the 72 days before (5 million over 90 days), then measure again.

Each measure is the median of ``--repeat`` in-process calls, as a ratio against one indexed
primary-key lookup (``session.get`` of a publish attempt in its own transaction) timed in turn
with it in the same process (so both see the same load on a shared machine): every default
rule's evaluation (``evaluate_rule``, committed), the health report (all workspaces and one),
and the ``/metrics`` exposition. Goal: each ratio ≤ 50x and the same at 1 and 5 million.
HTTP times through a real uvicorn server are printed for information. A token refresh attempt
is recorded for every tenth publish attempt.

Needs Postgres (HERALD_BENCH_DATABASE_URL, default the local server) and Redis for the broker
probe (HERALD_BENCH_REDIS_URL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import jwt
import uvicorn
from sqlalchemy import select, text

from bench.processes import free_port
from herald import db
from herald.alerts.defaults import DEFAULT_RULES
from herald.alerts.engine import evaluate_rule, service_sessions
from herald.api import create_app
from herald.api.monitoring import metrics_registry
from herald.api.server import server_config
from herald.beat_schedule import beat_schedule
from herald.celery_app import QUEUES, broker_connection
from herald.migrations import runner
from herald.models import AlertRule, PublishAttempt, utcnow
from herald.security.audit_verify import verify_and_record
from herald.settings import Settings, use_settings
from herald.telemetry import records
from herald.telemetry.broker import probe
from herald.telemetry.health import check_health, publish_last_hour
from herald.telemetry.logging import configure_logging
from herald.telemetry.state import job_intervals, read_state

ADMIN_URL = os.environ.get(
    "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:8]
DB_NAME = f"herald_bench_alerts_{RUN}"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"  # a throwaway run's key

WORKSPACES = 1000
PROVIDERS = ("mastodon", "x", "bluesky", "linkedin", "telegram")
DAYS = 90
GOAL = 50.0
# Bulk-loaded tables whose secondary indexes are dropped for the load and built after it.
LOADED = ("posts", "publish_attempts", "token_refresh_attempts")
# One post in eight needs a second attempt (the first was a transient error): 1.125 per post.
ATTEMPTS_PER_POST = 1.125


# -- the throwaway database --------------------------------------------------------------------


def admin(sql: str) -> None:
    engine = db.make_engine(ADMIN_URL)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(sql))
    engine.dispose()


def seed_workspaces() -> None:
    with db.session_scope() as s:
        s.execute(
            text(
                """
                INSERT INTO workspaces (id, name, slug)
                SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
                       'Bench ' || k, 'bench-' || k
                FROM generate_series(0, :n - 1) k
                """
            ),
            {"n": WORKSPACES},
        )
        s.execute(
            text(
                """
                INSERT INTO integrations (id, workspace_id, provider, external_account_id,
                    settings, status, access_token_ciphertext, token_key_id, scopes,
                    token_version, refresh_failure_count)
                SELECT ('01000000-0000-4000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
                       ('00000000-0000-4000-8000-' || lpad(to_hex(k), 12, '0'))::uuid,
                       (CAST(:providers AS text[]))[1 + k % 5], 'account-' || k, '{}', 'active',
                       'not-a-real-token', 'bench', '[]', 1, 0
                FROM generate_series(0, :n - 1) k
                """
            ),
            {"n": WORKSPACES, "providers": list(PROVIDERS)},
        )


@contextmanager
def indexes_dropped() -> Iterator[None]:
    """Drop the loaded tables' secondary (non-unique) indexes; rebuild them and VACUUM after."""
    with db.session_scope() as s:
        found = s.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:t) "
                "AND indexdef NOT LIKE 'CREATE UNIQUE%'"
            ),
            {"t": list(LOADED)},
        ).all()
        for name, _ in found:
            s.execute(text(f'DROP INDEX "{name}"'))
    yield
    with db.session_scope() as s:
        for _, definition in found:
            s.execute(text(definition))
    # What autovacuum does to a table in service: statistics, and the visibility map that lets
    # counts over an index range skip the heap.
    with db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in LOADED:
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))


def fill(attempts: int, newest: datetime, span: timedelta, first: int) -> None:
    """``attempts`` publish attempts (and a tenth as many token refreshes) spread evenly over
    ``[newest - span, newest)``, numbered from ``first`` (ids are derived from the number)."""
    posts = int(attempts / ATTEMPTS_PER_POST)
    refreshes = attempts // 10
    params = {
        "first": first,
        "last": first + posts - 1,
        "newest": newest,
        "step": span.total_seconds() / posts,
    }
    with db.session_scope() as s:
        s.execute(
            text(
                """
                WITH new_posts AS (
                  INSERT INTO posts (id, workspace_id, integration_id, content, media,
                      provider_settings, scheduled_at, status, idempotency_key, attempts,
                      published_at, last_error_code, created_at, updated_at)
                  SELECT ('10000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                         ('00000000-0000-4000-8000-' || lpad(to_hex(n % 1000), 12, '0'))::uuid,
                         ('01000000-0000-4000-8000-' || lpad(to_hex(n % 1000), 12, '0'))::uuid,
                         'bench post ' || n, '[]', '{}', at,
                         CASE WHEN n % 97 = 0 THEN 'failed' ELSE 'published' END,
                         'bench-' || n, CASE WHEN n % 8 = 0 THEN 2 ELSE 1 END,
                         CASE WHEN n % 97 = 0 THEN NULL ELSE at + interval '65 seconds' END,
                         CASE WHEN n % 97 = 0 THEN 'content_rejected' END, at, at
                  FROM (SELECT n, CAST(:newest AS timestamptz)
                                  - (n - CAST(:first AS bigint) + 1)
                                    * CAST(:step AS float8) * interval '1 second' AS at
                        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) n) g
                  RETURNING id, integration_id, workspace_id, scheduled_at, status, attempts
                )
                INSERT INTO publish_attempts (id, workspace_id, post_id, provider,
                    attempt_number, started_at, finished_at, latency_ms, outcome, error_code,
                    http_status)
                SELECT ('2' || a || substr(p.id::text, 3))::uuid, p.workspace_id, p.id,
                       i.provider, a, started, started + latency * interval '1 millisecond',
                       latency,
                       CASE WHEN a < p.attempts THEN 'transient'
                            WHEN p.status = 'failed' THEN 'permanent'
                            ELSE 'published' END,
                       CASE WHEN a < p.attempts THEN 'http_503'
                            WHEN p.status = 'failed' THEN 'content_rejected' END,
                       CASE WHEN a < p.attempts THEN 503
                            WHEN p.status = 'failed' THEN 422 ELSE 200 END
                FROM new_posts p
                JOIN integrations i ON i.id = p.integration_id
                CROSS JOIN LATERAL generate_series(1, p.attempts) a
                CROSS JOIN LATERAL (
                  SELECT p.scheduled_at + ((a - 1) * 60 + 1) * interval '1 second' AS started,
                         (200 + random() * 1800)::int AS latency
                ) t
                """
            ),
            params,
        )
        s.execute(
            text(
                """
                INSERT INTO token_refresh_attempts (id, workspace_id, integration_id, provider,
                    started_at, finished_at, token_version_before, outcome)
                SELECT ('30000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                       i.workspace_id, i.id, i.provider, at, at + interval '400 milliseconds',
                       1, CASE WHEN n % 50 = 0 THEN 'transient' ELSE 'refreshed' END
                FROM (SELECT n, CAST(:newest AS timestamptz)
                                - (n - CAST(:first AS bigint) + 1)
                                    * CAST(:step AS float8) * interval '1 second' AS at
                      FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) n) g
                JOIN integrations i
                  ON i.id = ('01000000-0000-4000-8000-' || lpad(to_hex(n % 1000), 12, '0'))::uuid
                """
            ),
            {
                "first": first,
                "last": first + refreshes - 1,
                "newest": newest,
                "step": span.total_seconds() / refreshes,
            },
        )


def live_work(settings: Settings, now: datetime) -> None:
    """What is in flight now: scheduled, due, queued and retrying posts; the records beat and
    workers keep (heartbeats, job runs, the audit verifier's result)."""
    with db.session_scope() as s:
        s.execute(
            text(
                """
                INSERT INTO posts (id, workspace_id, integration_id, content, media,
                    provider_settings, scheduled_at, status, idempotency_key, attempts,
                    next_attempt_at, queued_at)
                SELECT ('40000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                       ('00000000-0000-4000-8000-' || lpad(to_hex(n % 1000), 12, '0'))::uuid,
                       ('01000000-0000-4000-8000-' || lpad(to_hex(n % 1000), 12, '0'))::uuid,
                       'live post ' || n, '[]', '{}',
                       CAST(:now AS timestamptz) + (n - 30) * interval '1 minute',
                       CASE WHEN n < 20 THEN 'queued' WHEN n < 30 THEN 'retrying'
                            ELSE 'scheduled' END,
                       'live-' || n, CASE WHEN n BETWEEN 20 AND 29 THEN 1 ELSE 0 END,
                       CASE WHEN n BETWEEN 20 AND 29
                            THEN CAST(:now AS timestamptz) + interval '30 seconds' END,
                       CASE WHEN n < 20 THEN CAST(:now AS timestamptz) END
                FROM generate_series(0, 499) n
                """
            ),
            {"now": now},
        )
        for queue in QUEUES:
            records.record_heartbeat(
                s, queue=queue, sent_at=now, received_at=now, worker=f"bench@{queue}"
            )
        verify_and_record(s)
    for job in job_intervals(beat_schedule(settings, QUEUES)):
        records.record_job_run(job, now)


# -- measuring ---------------------------------------------------------------------------------


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm: plans cached, connections open
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def pk_lookup(posts: int) -> Callable[[], object]:
    counter = iter(range(10**9))

    def call() -> object:
        n = (next(counter) * 7919) % posts
        key = uuid.UUID(f"21000000-0000-4000-8000-{n:012x}")  # attempt 1 of post n
        with db.session_scope() as s:
            found = s.get(PublishAttempt, key)
        assert found is not None, key
        return found

    return call


def components(settings: Settings) -> dict[str, Callable[[], object]]:
    """What health and /metrics are made of, for information."""

    def state() -> object:
        with db.session_scope() as s:
            db.service_scope(s, "bench")
            return read_state(s, settings)

    def publish() -> object:
        with db.session_scope() as s:
            db.service_scope(s, "bench")
            return publish_last_hour(s, utcnow(), None)

    return {
        "  state reading (database)": state,
        "  broker probe (Redis)": lambda: probe(lambda: broker_connection(settings), QUEUES),
        "  publish figures of the last hour": publish,
    }


def rule_call(rule_id: uuid.UUID, settings: Settings) -> Callable[[], object]:
    sessions = service_sessions("bench.alerts")

    def call() -> object:
        with sessions() as s:
            return evaluate_rule(s, rule_id, settings)

    return call


def measurements(settings: Settings) -> dict[str, Callable[[], object]]:
    with db.session_scope() as s:
        rules = {
            r.name: r.id for r in s.scalars(select(AlertRule).where(AlertRule.builtin.is_(True)))
        }
    calls = {f"rule: {spec.name}": rule_call(rules[spec.name], settings) for spec in DEFAULT_RULES}
    jobs = job_intervals(beat_schedule(settings, QUEUES))

    def health(workspace: uuid.UUID | None) -> Callable[[], object]:
        def call() -> object:
            return check_health(
                settings,
                lambda: broker_connection(settings),
                QUEUES,
                jobs,
                workspace_id=workspace,
            )

        return call

    from prometheus_client import generate_latest

    registry = metrics_registry(settings)
    calls["health (every workspace)"] = health(None)
    calls["health (one workspace)"] = health(uuid.UUID(int=0x00000000_0000_4000_8000_000000000007))
    calls["/metrics exposition"] = lambda: generate_latest(registry)
    return calls


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(server_config(create_app(settings), settings, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def http_times(base: str, repeat: int) -> dict[str, float]:
    token = jwt.encode(
        {"sub": "bench", "role": "service_role", "exp": int(time.time()) + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )
    auth = {"Authorization": f"Bearer {token}"}
    paths = {
        "GET /metrics": ("/metrics", {}),
        "GET /api/postiz/monitoring/health": ("/api/postiz/monitoring/health", auth),
        "GET /api/postiz/monitoring/metrics (1 h)": ("/api/postiz/monitoring/metrics", auth),
    }
    out = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for label, (path, headers) in paths.items():

            def call(path: str = path, headers: dict[str, str] = headers) -> object:
                response = client.get(path, headers=headers)
                if response.status_code >= 500 and response.status_code != 503:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                return response

            out[label] = median_ms(call, repeat)
    return out


def against_pk(
    call: Callable[[], object], pk: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median of ``call`` and of the primary-key lookup, timed in turn (pk, call, pk, call…)
    so that both see the same load on a shared machine; (call ms, ratio)."""
    call()
    pk()
    calls: list[float] = []
    lookups: list[float] = []
    for _ in range(repeat):
        for out, fn in ((lookups, pk), (calls, call)):
            started = time.perf_counter()
            fn()
            out.append((time.perf_counter() - started) * 1000)
    ms = statistics.median(calls)
    return ms, ms / statistics.median(lookups)


def report(stage: str, settings: Settings, posts: int, repeat: int) -> dict[str, float]:
    pk = pk_lookup(posts)
    base = median_ms(pk, repeat * 5)
    print(f"\n== {stage} ==  primary-key lookup: {base:.3f} ms (median of {repeat * 5})")
    print(f"{'in-process (ratio: each against a pk lookup':44} {'median ms':>10} {'x pk':>8}")
    print(f"{' timed in turn with it)':44}")
    ratios = {}
    for label, call in measurements(settings).items():
        ms, ratios[label] = against_pk(call, pk, repeat)
        mark = "" if ratios[label] <= GOAL else f"   over the {GOAL:.0f}x goal"
        print(f"{label:44} {ms:10.2f} {ratios[label]:7.1f}x{mark}")
    print("of which (information):")
    for label, call in components(settings).items():
        ms, ratio = against_pk(call, pk, repeat)
        print(f"{label:44} {ms:10.2f} {ratio:7.1f}x")
    base = median_ms(pk, repeat * 5)
    with api_server(settings) as url:
        for label, ms in http_times(url, repeat).items():
            print(f"{'HTTP ' + label:44} {ms:10.2f} {ms / base:7.1f}x  (information)")
    return ratios


def bench_settings(url: str) -> Settings:
    settings = Settings(
        env="development",
        database_url=url,
        broker_url=REDIS_URL,
        broker_key_prefix=f"herald-bench-alerts-{RUN}:",
        jwt_secret=JWT_SECRET,
        log_level="WARNING",
    )
    use_settings(settings)
    configure_logging(settings)
    db.use_engine(db.make_engine(url))
    return settings


def remeasure(name: str, repeat: int) -> int:
    settings = bench_settings(ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        with db.session_scope() as s:
            count = s.scalar(text("SELECT count(*) FROM publish_attempts"))
            posts = s.scalar(
                text("SELECT count(*) FROM posts WHERE idempotency_key LIKE 'bench-%'")
            )
        ratios = report(f"{count:,} attempts (database {name})", settings, posts, repeat)
        return 0 if max(ratios.values()) <= GOAL else 1
    finally:
        db.dispose_engine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=5_000_000)
    parser.add_argument("--first", type=int, default=1_000_000, help="attempts of stage 1")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reuse", metavar="NAME", help="measure a kept database again (no load)")
    parser.add_argument("--first-only", action="store_true", help="load and measure stage 1 only")
    args = parser.parse_args()
    if args.reuse:
        return remeasure(args.reuse, args.repeat)

    admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        runner.upgrade(DB_URL)
        settings = bench_settings(DB_URL)
        now = utcnow()
        rate = args.attempts / timedelta(days=DAYS).total_seconds()  # attempts per second
        seed_workspaces()
        print(
            f"{WORKSPACES} workspaces; {rate * 3600:.0f} publish attempts an hour at every size "
            f"({args.attempts:,} over {DAYS} days); database {DB_NAME}"
        )
        results: dict[int, dict[str, float]] = {}
        done, posts = 0, 0
        for target in (args.first,) if args.first_only else (args.first, args.attempts):
            started = time.perf_counter()
            span = timedelta(seconds=(target - done) / rate)
            newest = now - timedelta(seconds=done / rate)
            with indexes_dropped():
                fill(target - done, newest, span, posts)
            posts += int((target - done) / ATTEMPTS_PER_POST)
            done = target
            if not results:
                live_work(settings, utcnow())
            with db.session_scope() as s:
                count = s.scalar(text("SELECT count(*) FROM publish_attempts"))
            print(f"\nloaded {count:,} publish attempts in {time.perf_counter() - started:.0f} s")
            results[target] = report(f"{count:,} attempts", settings, posts, args.repeat)
        if args.first_only:
            return 0 if max(results[args.first].values()) <= GOAL else 1
        small, large = results[args.first], results[args.attempts]
        print(f"\n{'flat? ratio at 5 M / ratio at 1 M':44} {'':>10} {'':>8}")
        worst = 0.0
        for label in large:
            growth = large[label] / small[label]
            worst = max(worst, large[label])
            print(f"{label:44} {growth:18.2f}")
        verdict = "met" if worst <= GOAL else "MISSED"
        print(f"\nworst ratio {worst:.1f}x (goal ≤ {GOAL:.0f}x): {verdict}")
        return 0 if worst <= GOAL else 1
    finally:
        db.dispose_engine()
        if not args.keep:
            admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
