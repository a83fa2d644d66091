"""A pool process killed mid-publish while its worker lives on (the kernel's OOM killer, a
``kill -9`` of the child, Flower's *Terminate*): the worker saw it die, so its post is
reconciled at once instead of after ``HERALD_PUBLISHING_TIMEOUT_S``. A worker killed whole
takes its pool processes with it: the next worker of its pid namespace (restarted, or beside
it on the host) proves them gone and has their posts reconciled the same way.

Tests taking ``broker`` run on Redis and on RabbitMQ (tests/fixtures/brokers.py).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from herald.models import Post, PostStatus, PublishAttempt, utcnow
from herald.publishing.sweep import Orphan, orphaned_attempts, resolve_lost_process
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.telemetry.context import PID_NAMESPACE, process_gone, process_name
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker, WorkerProcess
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_pipeline import dispatch_once
from tests.integration.publishing.test_sweep import stuck_post
from tests.unit.telemetry.test_process_identity import exited_pid


def pool_children(worker: WorkerProcess) -> list[int]:
    """The pids of the worker's pool processes (Linux: the kernel's list of its children)."""
    pid = worker.proc.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@dataclass
class MidCall:
    post: Post
    worker: WorkerProcess
    attempt: PublishAttempt


def publish_until_mid_call(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    start_worker: StartWorker,
    broker: Broker,
) -> MidCall:
    """One post published by a one-process worker, caught while the network holds its request:
    the network applies the post and answers 2 s later. The sweep would take the post only
    after ten minutes, so whatever settles it is the worker (3.5 s after the death: one call's
    connect and read timeouts)."""
    settings = settings.model_copy(
        update={"provider_timeout_s": 2.5, "publishing_timeout_s": 600.0}
    )
    post = new_post(connect("mastodon"), content="in flight when its pool process died")
    sandbox.inject("mastodon", "timeout", applied=True, ms=2_000, method="POST", times=1)
    worker = start_worker(settings, name="survivor", concurrency=1, broker=broker)
    dispatch_once(settings, broker)
    eventually(lambda: sandbox.posts("mastodon"), 30, "the network to receive the post")
    return MidCall(post, worker, the_attempt(post))


def the_attempt(post: Post) -> PublishAttempt:
    with service_session() as s:
        (attempt,) = s.scalars(select(PublishAttempt).where(PublishAttempt.post_id == post.id))
        return attempt


def first_attempt(post: Post, **values: Any) -> None:
    """Attempt 1 of ``post``, which a later attempt has superseded."""
    with service_session() as s:
        s.add(
            PublishAttempt(
                workspace_id=post.workspace_id,
                post_id=post.id,
                provider="mastodon",
                attempt_number=1,
                started_at=utcnow(),
                **values,
            )
        )


def assert_reconciled_once(
    sandbox: SandboxClient, run: MidCall, survivor: WorkerProcess | None = None
) -> None:
    settled = eventually(
        lambda: fresh(Post, run.post.id),
        30,
        "the post to be reconciled after its pool process died",
        until=lambda p: p.status is not PostStatus.PUBLISHING,
        every=0.2,
    )
    assert settled.status is PostStatus.PUBLISHED
    (remote,) = sandbox.posts("mastodon")
    assert settled.external_id == str(remote["id"])
    attempt = the_attempt(run.post)
    assert (attempt.outcome, attempt.error_code) == ("reconciled", "worker_lost")
    assert (survivor or run.worker).alive()


@pytest.mark.slow
def test_a_pool_process_killed_mid_call_has_its_post_reconciled_without_waiting_for_the_sweep(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    run = publish_until_mid_call(
        connect, new_post, sandbox, pub_settings, start_worker_process, broker
    )
    (child,) = pool_children(run.worker)
    assert run.attempt.worker == process_name(child)  # the attempt names the process running it
    os.kill(child, signal.SIGKILL)
    assert_reconciled_once(sandbox, run)


@pytest.mark.slow
def test_a_worker_killed_whole_mid_call_has_its_post_reconciled_by_the_next_worker_on_its_host(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    broker: Broker,
) -> None:
    """``kill -9`` of the worker's main process: its pool processes die with it and nothing
    sees them die. The next worker started on this host finds the attempt's process gone."""
    run = publish_until_mid_call(
        connect, new_post, sandbox, pub_settings, start_worker_process, broker
    )
    assert run.attempt.process_ns == PID_NAMESPACE is not None
    (child,) = pool_children(run.worker)
    os.kill(run.worker.proc.pid, signal.SIGKILL)
    eventually(lambda: process_gone(process_name(child)), 10, "the pool process to die with it")
    successor = start_worker_process(
        pub_settings.model_copy(update={"provider_timeout_s": 2.5}),
        name="successor",
        concurrency=1,
        broker=broker,
    )
    assert_reconciled_once(sandbox, run, survivor=successor)


@pytest.mark.slow
def test_a_publish_terminated_from_flower_mid_call_is_reconciled_without_waiting_for_the_sweep(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    """Flower's *Terminate* (``revoke`` with ``terminate=True``) kills the process mid-call."""
    run = publish_until_mid_call(
        connect, new_post, sandbox, pub_settings, start_worker_process, redis_broker
    )
    assert run.attempt.task_id is not None
    redis_broker.app.control.revoke(run.attempt.task_id, terminate=True)
    assert_reconciled_once(sandbox, run)


def test_only_the_attempt_of_the_process_that_died_is_resolved(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    """The worker names the dead process; a post another process is publishing now (a second
    worker took the message again and claimed a newer attempt) or one already settled is left
    alone. Nothing waits for ``publishing_timeout_s``."""
    integration = connect("mastodon")
    now = utcnow()
    dead, alive = "host-a:101", "host-b:202"
    live = stuck_post(new_post, integration, now, worker=alive)
    newer = stuck_post(new_post, integration, now, attempt=2, worker=alive)
    # Its first attempt was the dead process's, and finished.
    first_attempt(newer, worker=dead, finished_at=now, outcome="retry")
    mine = stuck_post(new_post, integration, now, worker=dead)

    def resolve(post: Post, process: str) -> str | None:
        with service_session() as s:
            return resolve_lost_process(s, pub_settings, keys, post.id, process)

    assert resolve(live, dead) is None
    assert resolve(newer, dead) is None
    assert fresh(Post, live.id).status is PostStatus.PUBLISHING
    assert fresh(Post, newer.id).status is PostStatus.PUBLISHING

    # Nothing reached the network: its absence is proven, so the post is tried again.
    assert resolve(mine, dead) == "retry"
    retried = fresh(Post, mine.id)
    assert retried.status is PostStatus.RETRYING
    assert retried.last_error_code == "worker_lost"
    assert resolve(mine, dead) is None  # settled once
    assert sandbox.posts("mastodon") == []


def test_only_an_open_attempt_whose_process_is_proven_gone_is_an_orphan(
    connect: ConnectFn,
    new_post: Callable[..., Post],
) -> None:
    """A worker proves a process gone only in its own pid namespace: another namespace (a
    container, another host), a row from before namespaces were recorded, a live process and
    an attempt superseded by a newer one are left to the sweep's timeout."""
    integration = connect("mastodon")
    now = utcnow()
    gone, here = process_name(exited_pid()), process_name()
    orphan = stuck_post(
        new_post, integration, now, worker=gone, process_ns=PID_NAMESPACE, correlation_id="c-run"
    )
    stuck_post(new_post, integration, now, worker=here, process_ns=PID_NAMESPACE)
    stuck_post(new_post, integration, now, worker=gone, process_ns=f"{uuid.uuid4()}/4026531836")
    stuck_post(new_post, integration, now, worker=gone)
    newer = stuck_post(new_post, integration, now, attempt=2, worker=here, process_ns=PID_NAMESPACE)
    # Its first attempt's process is gone, that attempt still open.
    first_attempt(newer, worker=gone, process_ns=PID_NAMESPACE)
    assert PID_NAMESPACE is not None
    with service_session() as s:
        (found,) = orphaned_attempts(s, PID_NAMESPACE)
    assert found == Orphan(
        orphan.id, gone, "c-run", orphan.workspace_id, None, the_attempt(orphan).started_at
    )
