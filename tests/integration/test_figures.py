"""The figure catalogue: right values on Postgres and SQLite alike, and every windowed read
served by an index (EXPLAIN on Postgres with sequential scans priced out)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.migrations import runner
from herald.models import (
    AuditVerification,
    Heartbeat,
    IntegrationStatus,
    JobRun,
    PostStatus,
    PublishAttempt,
    TokenRefreshAttempt,
)
from herald.telemetry import counters
from herald.telemetry.figures import CATALOGUE, FigureError, Window, compute, percentile_cont
from tests.fixtures.factories import make_integration, make_post, make_workspace

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = Window(NOW - timedelta(hours=1), NOW)
LATENCIES_MS = [100, 200, 300, 400, 500, 600, 700, 800, 900, 10_000]


def _fill(session: Session) -> dict[str, Any]:
    """Attempts inside the window, one just outside it, refreshes, counters, records."""
    ws, other = make_workspace(session), make_workspace(session)
    ids: dict[str, Any] = {"ws": ws.id, "other": other.id}
    outcomes = ["published"] * 6 + ["failed", "transient", "rate_limited", "reconciled"]
    for provider, workspace in (("mastodon", ws), ("bluesky", other)):
        integration = make_integration(session, workspace, provider=provider)
        post = make_post(
            session,
            integration,
            scheduled_at=NOW - timedelta(minutes=50),
            status=PostStatus.PUBLISHED,
        )
        for number, (outcome, latency) in enumerate(zip(outcomes, LATENCIES_MS, strict=True)):
            started = NOW - timedelta(minutes=40 - number)
            session.add(
                PublishAttempt(
                    workspace_id=workspace.id,
                    post_id=post.id,
                    provider=provider,
                    attempt_number=number + 1,
                    started_at=started,
                    finished_at=started + timedelta(milliseconds=latency),
                    latency_ms=latency,
                    outcome=outcome,
                    error_code=None if outcome in ("published", "reconciled") else outcome,
                )
            )
        session.add(  # outside the window: never counted
            PublishAttempt(
                workspace_id=workspace.id,
                post_id=post.id,
                provider=provider,
                attempt_number=99,
                started_at=NOW - timedelta(hours=2),
                finished_at=NOW - timedelta(hours=2),
                latency_ms=999_999,
                outcome="failed",
            )
        )
        for n, outcome in enumerate(["refreshed", "refreshed", "failed", "reauth_required"]):
            session.add(
                TokenRefreshAttempt(
                    workspace_id=workspace.id,
                    integration_id=integration.id,
                    provider=provider,
                    started_at=NOW - timedelta(minutes=30 - n),
                    outcome=outcome,
                    token_version_before=1,
                )
            )
        make_post(session, integration, scheduled_at=NOW - timedelta(minutes=5))  # due
        make_post(session, integration, status=PostStatus.QUEUED)
    # Due again since 20 minutes (the oldest due post), and one finished before the window.
    make_post(
        session,
        integration,
        scheduled_at=NOW - timedelta(minutes=30),
        status=PostStatus.RETRYING,
        next_attempt_at=NOW - timedelta(minutes=20),
    )
    make_post(session, integration, scheduled_at=NOW - timedelta(days=2), status=PostStatus.FAILED)
    # Due for days, but the dispatcher leaves them waiting (for their user, a reconnect, the
    # network's rate limit): not a backlog, not due to be queued, not the oldest due post.
    for held in (
        {"status": IntegrationStatus.NEEDS_REAUTH},
        {"status": IntegrationStatus.DISABLED},
        {"rate_limited_until": NOW + timedelta(hours=1)},
    ):
        waiting = make_integration(session, ws, provider="mastodon", **held)
        make_post(session, waiting, scheduled_at=NOW - timedelta(days=3))
        make_post(
            session,
            waiting,
            scheduled_at=NOW - timedelta(days=3),
            status=PostStatus.RETRYING,
            next_attempt_at=NOW - timedelta(days=2),
        )
    counters.increment(session, "audit.write_failed", 3, at=NOW - timedelta(minutes=3))
    counters.increment(
        session, "audit.write_failed", 2, workspace_id=ws.id, at=NOW - timedelta(minutes=2)
    )
    session.add(
        Heartbeat(
            queue="publish", sent_at=NOW, received_at=NOW - timedelta(seconds=30), worker="w1"
        )
    )
    session.add(
        Heartbeat(
            queue="tokens", sent_at=NOW, received_at=NOW - timedelta(seconds=400), worker="w2"
        )
    )
    session.add(
        JobRun(job="herald.posts.dispatch_due", last_succeeded_at=NOW - timedelta(seconds=90))
    )
    session.add(
        AuditVerification(
            verified_at=NOW - timedelta(minutes=1), ok=False, checked=10, first_break=4
        )
    )
    session.flush()
    return ids


def _value(session: Session, name: str, **query: Any) -> float | None:
    [sample] = compute(session, name, query.pop("window", HOUR), **query)
    return sample.value


def _check_values(session: Session, ids: dict[str, Any]) -> None:
    assert _value(session, "publish.attempts") == 20
    assert _value(session, "publish.failure_rate") == pytest.approx(6 / 20)
    assert _value(session, "publish.success_rate") == pytest.approx(14 / 20)
    assert _value(session, "publish.retry_rate") == pytest.approx(4 / 20)
    assert _value(session, "publish.failure_rate", workspace_id=ids["ws"]) == pytest.approx(0.3)
    assert _value(session, "publish.latency_avg_s") == pytest.approx(sum(LATENCIES_MS) / 10_000)
    expected_p95 = percentile_cont([ms / 1000 for ms in LATENCIES_MS * 2], 0.95)
    assert _value(session, "publish.latency_p95_s") == pytest.approx(expected_p95)
    by_provider = compute(session, "publish.attempts", HOUR, group_by=["provider"])
    assert {s.labels["provider"]: s.value for s in by_provider} == {"mastodon": 10, "bluesky": 10}
    errors = compute(session, "publish.errors", HOUR, group_by=["code"])
    assert {s.labels["code"]: s.value for s in errors} == {
        "failed": 2,
        "transient": 2,
        "rate_limited": 2,
    }
    assert _value(session, "tokens.refresh_success_rate") == pytest.approx(0.5)
    assert _value(session, "tokens.refresh_attempts", filters={"provider": "bluesky"}) == 4
    assert _value(session, "queue.backlog", window=Window.last(60, NOW)) == 5
    assert _value(session, "queue.due_unqueued", window=Window.last(60, NOW)) == 3
    assert _value(session, "queue.oldest_due_age_s", window=Window.last(60, NOW)) == 20 * 60
    posts = compute(session, "queue.posts", HOUR, group_by=["status"])
    # Open statuses whole; finished ones only when scheduled inside the window.
    assert {s.labels["status"]: s.value for s in posts} == {
        "published": 2,
        "scheduled": 5,
        "queued": 2,
        "retrying": 4,
    }
    assert _value(session, "events.count", filters={"name": "audit.write_failed"}) == 5
    assert _value(session, "events.count", workspace_id=ids["ws"]) == 2
    ages = compute(session, "workers.heartbeat_age_s", Window.last(60, NOW), group_by=["queue"])
    assert {s.labels["queue"]: s.value for s in ages} == {"publish": 30, "tokens": 400}
    assert _value(session, "workers.seen", window=Window.last(180, NOW)) == 1
    assert _value(session, "jobs.last_success_age_s", window=Window.last(60, NOW)) == 90
    assert _value(session, "audit.chain_broken", window=Window.last(60, NOW)) == 1
    delay = _value(session, "publish.delay_p50_s")
    assert delay is not None
    assert 10 * 60 < delay < 50 * 60


def test_figures_on_postgres(session: Session) -> None:
    ids = _fill(session)
    _check_values(session, ids)


def test_figures_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'figures.sqlite3'}"
    runner.upgrade(url)
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            session.info["service_scope"] = "tests"  # figures for all workspaces and for one
            _check_values(session, _fill(session))
    finally:
        engine.dispose()


def test_a_figure_refuses_what_it_cannot_answer(session: Session) -> None:
    with pytest.raises(FigureError, match="unknown figure"):
        compute(session, "publish.nope", HOUR)
    with pytest.raises(FigureError, match="no label queue"):
        compute(session, "publish.attempts", HOUR, group_by=["queue"])
    with pytest.raises(FigureError, match="not computed per workspace"):
        compute(session, "workers.seen", HOUR, workspace_id=uuid.uuid4())
    with pytest.raises(FigureError, match="start before"):
        Window(NOW, NOW)


# -- every windowed read goes through an index --------------------------------------------------

# Tables whose size grows with history: a figure must never scan them whole.
GROWING = (
    "publish_attempts",
    "token_refresh_attempts",
    "event_counts",
    "posts",
    "alerts",
    "audit_verifications",
)


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    yield seen
    event.remove(engine, "before_cursor_execute", capture)


def _variants(name: str) -> list[dict[str, Any]]:
    figure = CATALOGUE[name]
    variants: list[dict[str, Any]] = [{}]
    if figure.per_workspace:
        variants.append({"workspace_id": uuid.uuid4()})
    for label in figure.labels:
        if label != "workspace_id":
            variants.append({"group_by": [label]})
    return variants


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def _leading_columns(conn: Any) -> dict[str, tuple[str, str]]:
    """index name → (table, its first column); a partial index (it holds only the rows its
    predicate selects, such as open alerts) answers for itself: column ``*``."""
    rows = conn.execute(
        text(
            "SELECT i.relname, t.relname,"
            " CASE WHEN x.indpred IS NULL THEN a.attname ELSE '*' END FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        )
    )
    return {index: (table, column) for index, table, column in rows}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_figure_reads_its_window_through_indexes(
    name: str, engine: Engine, statements: list[tuple[str, Any]]
) -> None:
    """No growing table is scanned whole: every scan of one is an index scan whose leading
    column the query constrains (the planner is steered to the plan it picks on big tables:
    no sequential scans, nested loops over the window)."""
    with Session(engine) as session:
        for variant in _variants(name):
            compute(session, name, HOUR, **variant)
        session.rollback()
    assert statements
    with engine.connect() as conn:
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            conn.execute(text(f"SET {setting} = off"))
        leading = _leading_columns(conn)
        for statement, parameters in statements:
            [[plan]] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
            for node in _scans(plan[0]["Plan"]):
                where = f"{name}: {statement}\n{node}"
                if node["Node Type"] == "Seq Scan":
                    assert node["Relation Name"] not in GROWING, where
                if "Index Name" in node:
                    table, column = leading[node["Index Name"]]
                    if table in GROWING and column != "*":
                        assert column in node.get("Index Cond", ""), where


@pytest.mark.parametrize("window_s", [10, 20, 30])
def test_counted_events_are_seen_by_a_window_shorter_than_their_minute(
    session: Session, window_s: int
) -> None:
    """Counters are kept in one-minute buckets, and a bucket counted only when its minute began
    inside the window: an ``events.count`` rule of a window under a minute never saw anything
    (a window may be 10 s). The minute under way at the window's start counts."""
    session.info["service_scope"] = "tests"
    minute = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    counters.increment(session, "short.window", 3, at=minute + timedelta(seconds=35))
    session.flush()
    seen = compute(
        session,
        "events.count",
        Window.last(window_s, minute + timedelta(seconds=50)),
        filters={"name": "short.window"},
    )
    assert [s.value for s in seen] == [3]
