"""A worker paused mid-publish (``docker pause``, ``kill -STOP`` of its process group) and
resumed after the sweep took its post: the resumed run sends nothing and moves nothing
(herald/providers/fence.py), so the post goes out once.

X is the network here because it honours no idempotency key: a second request would be a
second post. The settings make the run's lease two seconds (``publishing_timeout_s`` 36.5 less
the 30 s clock allowance and one call's 4.5 s), within the time limits the timing relations
allow for them.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from herald.contracts import NetworkAnswer, RefusedAnswer
from herald.models import (
    CircuitState,
    Post,
    PostStatus,
    ProviderCircuit,
    PublishAttempt,
    utcnow,
)
from herald.providers.fence import lease_s
from herald.publishing.publisher import record_answer
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings, timing_problems
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.media import MediaHost
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_pipeline import dispatch_once
from tests.integration.publishing.test_publish_outcomes import attempts_of, run_publish
from tests.integration.publishing.test_sweep import stuck_post

#: The network holds the first media upload call this long: the run is mid-call when paused.
HELD_MS = 1_500


@pytest.fixture
def settings(pub_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = pub_settings.model_copy(
        update={
            "provider_connect_timeout_s": 1.0,
            "provider_timeout_s": 3.5,
            "task_soft_time_limit_s": 5,
            "task_time_limit_s": 6,
            "publishing_timeout_s": 36.5,
            "outbound_allow_hosts": ["127.0.0.1"],
            "media_cache_dir": str(tmp_path_factory.mktemp("media-cache")),
            "media_upload_poll_s": 0.01,
        }
    )
    assert timing_problems(settings) == []
    assert lease_s(settings) == 2.0
    return settings


def x_post_held_in_its_upload(
    connect: ConnectFn, new_post: Callable[..., Post], sandbox: SandboxClient, image: str, ms: int
) -> Post:
    """A due X post with one image, whose first media upload call X holds ``ms`` ms."""
    sandbox.inject("x", "latency", ms=ms, method="POST", path="/2/media/upload/initialize", times=1)
    return new_post(connect("x"), content="held mid-call", media=[{"url": image}])


def test_a_write_due_after_the_lease_is_not_sent_and_the_post_retries(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
    media_host: MediaHost,
) -> None:
    """Not paused, only slow: the upload's answer comes after the lease ended, so the
    upload's next call and the tweet are not sent. The upload went out, so the run cannot
    know from itself that no post exists: it reconciles (X lists nothing) and retries.
    Nothing counts against X's circuit."""
    post = x_post_held_in_its_upload(connect, new_post, sandbox, media_host.image(), 2_500)
    assert run_publish(post, settings, keys).status is PostStatus.RETRYING
    assert sandbox.posts("x") == []
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("ambiguous_retry", "claim_expired_mid_call")
    assert "was not sent" in (attempt.error_message or "")
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "claim_expired_mid_call"
    with service_session() as s:
        circuit = s.get(ProviderCircuit, "x")
    assert circuit is None or (circuit.state, circuit.failures) == (CircuitState.CLOSED, 0)
    # The next attempt, in time, publishes it (reusing nothing it did not finish).
    assert run_publish(post, settings, keys).status is PostStatus.PUBLISHED
    assert len(sandbox.posts("x")) == 1


@pytest.mark.slow
def test_a_worker_paused_past_the_sweep_sends_nothing_when_it_resumes(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
    media_host: MediaHost,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    post = x_post_held_in_its_upload(connect, new_post, sandbox, media_host.image(), HELD_MS)
    worker = start_worker_process(
        settings,
        name="paused",
        concurrency=1,
        broker=redis_broker,
        HERALD_OUTBOUND_ALLOW_HOSTS=json.dumps(settings.outbound_allow_hosts),
        HERALD_MEDIA_CACHE_DIR=str(settings.media_cache_dir),
    )
    dispatch_once(settings, redis_broker)
    (claimed,) = eventually(lambda: attempts_of(post), 30, "the claim", every=0.02)
    os.killpg(worker.proc.pid, signal.SIGSTOP)  # the whole worker: main process and pool
    try:
        # The network held the upload for 1.5 s: the run is still inside it, or before it.
        assert sandbox.posts("x") == []
        # Meanwhile the sweep (its clock past HERALD_PUBLISHING_TIMEOUT_S) finds nothing at
        # X and queues the post again.
        sweeper = settings.model_copy(update={"publishing_timeout_s": 0.5})
        eventually(
            lambda: time.time() > claimed.started_at.timestamp() + 0.6, 5, "the sweep's timeout"
        )
        with service_session() as s:
            assert sum(resolve_dead_workers(s, sweeper, keys).values()) == 1
        assert fresh(Post, post.id).status is PostStatus.RETRYING
        lease_ends = claimed.started_at.timestamp() + lease_s(settings)
        eventually(lambda: time.time() > lease_ends + 0.3, 10, "the run's lease to end")
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    # Resumed: the upload's answer is read, the next write is not sent, and the run's outcome
    # does not move the post the sweep gave back.
    # The sweep finished the attempt ("worker_lost"); the run records what it did instead:
    # paused before its upload, nothing went out; paused inside it, the upload did (and the
    # run reconciles before recording).
    lapsed = {"claim_expired": "transient", "claim_expired_mid_call": "ambiguous_retry"}
    eventually(
        lambda: attempts_of(post)[0].error_code,
        30,
        "the resumed run to record its attempt",
        until=lambda code: code in lapsed,
    )
    (first,) = attempts_of(post)
    assert first.outcome == lapsed[first.error_code or ""]
    assert sandbox.posts("x") == []
    assert fresh(Post, post.id).status is PostStatus.RETRYING
    # The post's next attempt publishes it: once.
    dispatch_once(settings, redis_broker)
    published = eventually(
        lambda: fresh(Post, post.id),
        30,
        "the next attempt to publish the post",
        until=lambda p: p.status is PostStatus.PUBLISHED,
    )
    (tweet,) = sandbox.posts("x")
    assert published.external_id == str(tweet["id"])
    assert [a.attempt_number for a in attempts_of(post)] == [1, 2]
    assert worker.alive()


def test_the_outcome_of_a_superseded_attempt_moves_nothing(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    settings: Settings,
    keys: KeyRing,
) -> None:
    """Attempt 1's answer arrives while attempt 2 holds the post (the sweep gave it back and
    another run claimed it): the post stays with attempt 2."""
    integration = connect("x")
    now = utcnow()
    post = stuck_post(new_post, integration, now, attempt=2)
    stale = PublishAttempt(
        id=uuid.uuid4(),
        workspace_id=post.workspace_id,
        post_id=post.id,
        provider="x",
        attempt_number=1,
        started_at=now - timedelta(minutes=11),
        task_id="first",
    )
    with service_session() as s:
        s.add(stale)
        s.commit()
    answer = NetworkAnswer(
        post_id=post.id,
        attempt_id=stale.id,
        task_id="first",
        finished_at=now,
        latency_ms=5,
        refused=RefusedAnswer(code="transient", message="HTTP 503"),
    )
    with service_session() as s:
        assert record_answer(s, answer, settings, keys).status is None  # lost, logged
    stored = fresh(Post, post.id)
    assert (stored.status, stored.attempts) == (PostStatus.PUBLISHING, 2)
