"""The sweep resolves posts whose worker died, with bounded work per post, no transaction held
across a network call, and verdicts applied only to the attempt it looked up.

Real Postgres, the sandbox over real HTTP, and (where time limits or queues matter) real
Celery worker processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select, text, update

from herald import db
from herald.models import (
    CircuitState,
    Integration,
    Post,
    PostStatus,
    ProviderCircuit,
    PublishAttempt,
    utcnow,
)
from herald.publishing.dispatch import claim_due_posts
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.conftest import TEST_DATABASE
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually, request_arrives
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_integration_states import without_network

NewPost = Callable[..., Post]


def stuck_post(
    new_post: NewPost,
    integration: Integration,
    started: datetime,
    attempt: int = 1,
    worker: str | None = None,
    process_ns: str | None = None,
    correlation_id: str | None = None,
    **values: Any,
) -> Post:
    """A post whose worker died mid-call: ``publishing`` since ``started``, its attempt open
    (run by the process named ``worker``, in pid namespace ``process_ns``, under
    ``correlation_id``)."""
    post = new_post(
        integration,
        status=PostStatus.PUBLISHING,
        attempts=attempt,
        publishing_started_at=started,
        **values,
    )
    with service_session() as s:
        s.add(
            PublishAttempt(
                workspace_id=post.workspace_id,
                post_id=post.id,
                provider=integration.provider,
                attempt_number=attempt,
                started_at=started,
                worker=worker,
                process_ns=process_ns,
                correlation_id=correlation_id,
            )
        )
    return post


def sweep(settings: Settings, keys: KeyRing, **kwargs: Any) -> Counter[str]:
    with service_session() as s:
        return resolve_dead_workers(s, settings, keys, **kwargs)


def hours_ago(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)


def test_failing_lookups_are_bounded_and_never_hold_back_the_other_stuck_posts(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """More posts whose lookup fails than one sweep takes, and a healthy one behind them."""
    settings = pub_settings.model_copy(
        update={
            "sweep_batch_size": 3,
            "sweep_max_resolve_attempts": 2,
            "sweep_resolve_backoff_s": 0.001,
        }
    )
    down = connect("mastodon")
    failing = [stuck_post(new_post, down, hours_ago(2 - i / 10), content=f"f{i}") for i in range(4)]
    healthy = stuck_post(new_post, connect("mastodon"), hours_ago(1), content="healthy")
    sandbox.inject(
        "mastodon", "error", status=503, method="GET", account_id=down.external_account_id
    )

    assert sweep(settings, keys) == {"resolve_failed": 3}
    for post in failing[:3]:
        waiting = fresh(Post, post.id)
        assert waiting.status is PostStatus.PUBLISHING  # one failed lookup proves nothing
        assert waiting.resolve_attempts == 1
        assert waiting.last_error_code == "resolve_failed"

    # The posts not yet tried come first: the healthy one is reached in the next run.
    assert sweep(settings, keys) == {"resolve_failed": 1, "retry": 1, "needs_review": 1}
    resolved = fresh(Post, healthy.id)
    assert resolved.status is PostStatus.RETRYING  # not at the network: safe to send again
    assert "not at mastodon" in resolved.last_error_message

    assert sweep(settings, keys) == {"needs_review": 3}
    assert sweep(settings, keys) == {}
    for post in failing:
        gave_up = fresh(Post, post.id)
        assert gave_up.status is PostStatus.NEEDS_REVIEW
        assert gave_up.resolve_attempts == 2
        assert "gave up after 2 resolutions" in gave_up.last_error_message
        assert "the lookup failed" in gave_up.last_error_message
    with service_session() as s:
        outcomes = s.scalars(select(PublishAttempt.outcome).order_by(PublishAttempt.outcome))
        assert list(outcomes) == ["needs_review"] * 4 + ["retry"]
    assert [r for r in sandbox.requests("mastodon") if r["method"] == "POST"] == []


def test_a_resolution_that_raises_is_bounded_and_never_holds_back_the_others(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    # X is missing from the configuration: resolving its posts raises before any lookup.
    settings = without_network(
        pub_settings, "x", sweep_max_resolve_attempts=2, sweep_resolve_backoff_s=0.001
    )
    broken = connect("x")
    raising = [stuck_post(new_post, broken, hours_ago(2 - i / 10)) for i in range(3)]
    healthy = stuck_post(new_post, connect("mastodon"), hours_ago(1))

    sweep(settings, keys, limit=2)
    sweep(settings, keys, limit=2)
    assert fresh(Post, healthy.id).status is PostStatus.RETRYING
    sweep(settings, keys, limit=2)
    sweep(settings, keys, limit=2)
    for post in raising:
        gave_up = fresh(Post, post.id)
        assert gave_up.status is PostStatus.NEEDS_REVIEW
        assert "no base URL configured for provider 'x'" in gave_up.last_error_message


def test_a_stuck_post_out_of_attempts_goes_to_review_even_where_a_resend_is_safe(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    last_try = pub_settings.publish_max_attempts
    post = stuck_post(new_post, connect("mastodon"), hours_ago(1), attempt=last_try)
    assert sweep(pub_settings, keys) == {"needs_review": 1}
    stored = fresh(Post, post.id)
    assert stored.status is PostStatus.NEEDS_REVIEW
    assert "not at mastodon" in stored.last_error_message
    assert sandbox.posts("mastodon") == []


def test_the_sweep_holds_no_transaction_open_while_it_asks_the_network(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 10.0})
    integration = connect("mastodon")
    stuck_post(new_post, integration, hours_ago(1))
    sandbox.inject("mastodon", "latency", ms=2000, method="GET")

    long_transactions: list[Any] = []
    sweeping = threading.Thread(target=sweep, args=(settings, keys))
    started = time.monotonic()
    sweeping.start()
    with db.get_engine().connect() as observer:
        while sweeping.is_alive():
            long_transactions += observer.execute(
                text(
                    "SELECT pid, query FROM pg_stat_activity WHERE datname = :db "
                    "AND state = 'idle in transaction' AND now() - xact_start > interval '1 s'"
                ),
                {"db": TEST_DATABASE},
            ).all()
            observer.rollback()
            sweeping.join(timeout=0.05)  # the next sample as soon as the sweep ends
    sweeping.join()
    assert time.monotonic() - started >= 2.0  # the lookup really was slow
    assert long_transactions == []


def test_a_verdict_is_not_applied_to_an_attempt_that_started_after_the_lookup(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 10.0})
    integration = connect("mastodon")
    post = stuck_post(new_post, integration, hours_ago(1))
    sandbox.inject("mastodon", "latency", ms=1500, method="GET")

    results: list[Counter[str]] = []
    sweeping = threading.Thread(target=lambda: results.append(sweep(settings, keys)))
    sweeping.start()
    request_arrives(sandbox, "mastodon", "GET")  # the sweep's lookup, answered in 1.5 s
    # Meanwhile the post moved on and was claimed again: attempt 2 is in flight now.
    with service_session() as s:
        s.execute(
            update(Post)
            .where(Post.id == post.id)
            .values(attempts=2, publishing_started_at=utcnow())
        )
    sweeping.join()

    assert results == [Counter({"superseded": 1})]
    current = fresh(Post, post.id)
    assert current.status is PostStatus.PUBLISHING
    assert current.attempts == 2


def test_the_sweep_does_not_swallow_its_soft_time_limit(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    celery_app: Celery,
    tmp_path: Path,
) -> None:
    post = stuck_post(new_post, connect("mastodon"), hours_ago(1))
    # Every lookup try times out after 2 s, three tries: twice the soft limit of 3 s.
    sandbox.inject("mastodon", "latency", ms=30_000, method="GET")
    start_worker_process(
        pub_settings,
        name="sweeper",
        queues="sweep",
        concurrency=1,
        HERALD_PROVIDER_TIMEOUT_S="2",
        HERALD_PROVIDER_CONNECT_TIMEOUT_S="0.5",
        HERALD_TASK_SOFT_TIME_LIMIT_S="3",
        HERALD_TASK_TIME_LIMIT_S="5",
        HERALD_PUBLISHING_TIMEOUT_S="60",
    )
    # A message carries its sender's time limits (beat's, in production: the same settings).
    celery_app.send_task("herald.posts.sweep_stuck", soft_time_limit=3, time_limit=5)
    log = tmp_path / "sweeper.log"

    def sweep_failed() -> dict[str, Any] | None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"task.failed"' in line:
                return dict(json.loads(line))
        return None

    try:
        failed = eventually(sweep_failed, timeout=30, what="the sweep task to fail")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the worker said:\n{log.read_text()[-3000:]}") from None
    assert failed["task"] == "herald.posts.sweep_stuck"
    assert failed["error_type"] == "SoftTimeLimitExceeded"
    assert "sweep.resolve_failed" not in log.read_text()
    leased = fresh(Post, post.id)
    assert leased.status is PostStatus.PUBLISHING
    assert leased.resolve_attempts == 1  # counted: a post that always times out is bounded
    assert leased.resolve_after is not None  # leased: the next tick does not retake it at once


def test_a_slow_sweep_never_delays_dispatch(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    celery_app: Celery,
) -> None:
    """Production's layout: the sweep on its own worker, dispatch on the default one."""
    settings = pub_settings.model_copy(update={"provider_timeout_s": 30.0})
    integration = connect("mastodon")
    stuck_post(new_post, integration, hours_ago(1))
    sandbox.inject("mastodon", "latency", ms=5_000, method="GET")
    start_worker_process(settings, name="sweeper", queues="sweep", concurrency=1)
    start_worker_process(settings, name="general", queues="default", concurrency=1)

    celery_app.send_task("herald.posts.sweep_stuck")
    request_arrives(sandbox, "mastodon", "GET", timeout=20)  # the sweep's slow lookup
    due = new_post(integration, content="due while the sweep waits on the network")
    celery_app.send_task("herald.posts.dispatch_due")
    eventually(
        lambda: fresh(Post, due.id).status is PostStatus.QUEUED,
        timeout=10,
        what="dispatch_due to queue the due post",
    )
    lookup = request_arrives(sandbox, "mastodon", "GET")
    assert lookup["status"] is None  # the sweep's lookup is still waiting for its answer


def test_the_sweep_task_sends_again_what_a_killed_dispatcher_never_sent(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    celery_app: Celery,
) -> None:
    """``herald.posts.sweep_stuck`` on a real worker: a post claimed by a dispatcher that died
    before sending its message is published once, and the sweep's own send is confirmed."""
    post = new_post(connect("mastodon"), content="claimed, never sent")
    with service_session() as s:
        (claimed,) = claim_due_posts(s, pub_settings)  # ... then the dispatcher is killed
        past = utcnow() - timedelta(seconds=pub_settings.send_timeout_s + 1)
        s.execute(update(Post).where(Post.id == post.id).values(updated_at=past))
    assert claimed.post_id == post.id
    start_worker_process(pub_settings, name="sweeper", queues="sweep,publish", concurrency=1)

    celery_app.send_task("herald.posts.sweep_stuck")
    published = eventually(
        lambda: fresh(Post, post.id),
        30,
        "the unsent post to be published",
        until=lambda p: p.status is PostStatus.PUBLISHED,
    )
    # One process: the publish ran after the sweep task, which confirmed its send first.
    assert published.queued_at is not None
    assert [p["text"] for p in sandbox.posts("mastodon")] == ["claimed, never sent"]


@pytest.mark.parametrize("probe_in_s", [300, -60], ids=["before its probe time", "after"])
def test_a_stuck_post_of_a_network_whose_circuit_is_open_waits_only_for_the_probe_time(
    connect: ConnectFn,
    new_post: NewPost,
    pub_settings: Settings,
    keys: KeyRing,
    probe_in_s: int,
) -> None:
    """The sweep leaves a failing network's stuck posts alone while its circuit is open: its
    lookups would fail and spend their resolutions. But only a publish probes the circuit, and
    a network with no other post to send is probed by nobody: once the probe time has come, the
    sweep's lookup goes (before, the post stayed publishing until unrelated traffic came)."""
    post = stuck_post(new_post, connect("mastodon"), hours_ago(1))
    with service_session() as s:
        s.add(
            ProviderCircuit(
                provider="mastodon",
                state=CircuitState.OPEN,
                opened_at=hours_ago(1),
                probe_at=utcnow() + timedelta(seconds=probe_in_s),
                probes_sent=0,
                openings=1,
                reason="test",
            )
        )

    resolved = sweep(pub_settings, keys)

    stored = fresh(Post, post.id)
    if probe_in_s > 0:
        assert (resolved, stored.status) == (Counter(), PostStatus.PUBLISHING)
    else:
        assert sum(resolved.values()) == 1
        assert stored.status is not PostStatus.PUBLISHING
