"""The network's answer outlives a database blip: the write is retried, never the publish.

The blip is real: right after the network call, the Postgres backend under the first write of
the outcome is terminated (``pg_terminate_backend`` from another connection), as a failover or
a restarted pooler would do. Deliveries are counted at the sandbox.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from herald import db
from herald.contracts import NetworkAnswer
from herald.models import Post, PostStatus, utcnow
from herald.publishing.dispatch import Claimed
from herald.publishing.publisher import record_answer
from herald.publishing.recording import OutcomeNotRecorded
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings, get_settings, use_settings
from herald.tasks.publishing import publish_signature
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_pipeline import wait_until
from tests.integration.publishing.test_publish_outcomes import attempts_of, run_publish

#: The sandbox path each network publishes on, for counting sends in its journal.
SEND_PATH = {"telegram": "/sendMessage", "linkedin": "/rest/posts"}


class DatabaseBlips:
    """Terminates the Postgres backend under the next ``times`` writes of an attempt's outcome
    (the first statement after the network call); the statement fails with the connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.remaining = 0
        self.fired = 0
        self._admin = create_engine(
            TEST_DATABASE_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )

    def arm(self, times: int) -> None:
        self.remaining = times

    def before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The general path's UPDATE, or the one statement of the common case (fastpath.py).
        if self.remaining <= 0 or "UPDATE publish_attempts" not in statement:
            return
        self.remaining -= 1
        self.fired += 1
        pid = conn.connection.dbapi_connection.info.backend_pid
        with self._admin.connect() as admin:
            terminated = admin.execute(
                text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
            ).scalar()
        assert terminated, "the backend under the write was not terminated"

    def close(self) -> None:
        self._admin.dispose()


@pytest.fixture
def blips(committed: Engine) -> Iterator[DatabaseBlips]:
    publishing = db.get_service_engine()  # publish runs in the service scope
    made = DatabaseBlips(publishing)
    event.listen(publishing, "before_cursor_execute", made.before_execute)
    yield made
    event.remove(publishing, "before_cursor_execute", made.before_execute)
    made.close()


def sends(sandbox: SandboxClient, network: str) -> int:
    return sum(
        1
        for e in sandbox.requests(network)
        if e["method"] == "POST" and SEND_PATH[network] in e["path"]
    )


@pytest.mark.parametrize("network", sorted(SEND_PATH))
def test_a_blip_right_after_the_network_took_the_post_is_retried_on_the_write_not_the_publish(
    network: str,
    blips: DatabaseBlips,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect(network), content=f"taken by {network}, then the database blinked")
    blips.arm(1)

    outcome = run_publish(post, pub_settings, keys)

    assert blips.fired == 1
    assert outcome.status is PostStatus.PUBLISHED
    stored = fresh(Post, post.id)
    assert stored.status is PostStatus.PUBLISHED
    (remote,) = sandbox.posts(network)
    assert stored.external_id == str(remote["id"])
    assert sends(sandbox, network) == 1
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("published", None)
    assert attempt.finished_at is not None


def test_when_the_write_keeps_failing_the_answer_leaves_the_run_instead_of_being_lost(
    blips: DatabaseBlips,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    post = new_post(connect("telegram"), content="taken, and the database stayed away")
    settings = pub_settings.model_copy(update={"publish_record_attempts": 2})
    blips.arm(2)

    with pytest.raises(OutcomeNotRecorded) as carried:
        run_publish(post, settings, keys)

    answer = carried.value.answer
    (remote,) = sandbox.posts("telegram")
    assert answer.published is not None
    assert answer.published.external_id == str(remote["id"])
    assert fresh(Post, post.id).status is PostStatus.PUBLISHING  # nothing written, nothing lost


@pytest.fixture
def two_tries(pub_settings: Settings) -> Iterator[Settings]:
    """The process's settings (what the in-thread worker reads) with two tries at a write."""
    previous = get_settings()
    settings = pub_settings.model_copy(update={"publish_record_attempts": 2})
    use_settings(settings)
    yield settings
    use_settings(previous)


def test_an_answer_the_database_would_not_take_is_recorded_later_and_never_published_again(
    blips: DatabaseBlips,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    two_tries: Settings,
    worker: Any,
) -> None:
    integration = connect("telegram")
    post = new_post(integration, content="recorded by record_outcome once the database is back")
    with service_session() as s:
        s.execute(
            Post.__table__.update()
            .where(Post.id == post.id)
            .values(status="queued", queued_at=utcnow())
        )
    blips.arm(2)  # both tries of the publish run fail; the handed-over answer then lands

    publish_signature(Claimed(post.id, None, integration.workspace_id, None)).apply_async()

    wait_until(lambda: fresh(Post, post.id).status is PostStatus.PUBLISHED, 30, "publication")
    assert blips.fired == 2
    (remote,) = sandbox.posts("telegram")
    stored = fresh(Post, post.id)
    assert stored.external_id == str(remote["id"])
    assert sends(sandbox, "telegram") == 1
    (attempt,) = attempts_of(post)
    assert attempt.outcome == "published"


def carried_answer(
    post: Post, blips: DatabaseBlips, settings: Settings, keys: KeyRing
) -> NetworkAnswer:
    """Publish ``post`` while the database refuses every write of the outcome."""
    blips.arm(settings.publish_record_attempts)
    with pytest.raises(OutcomeNotRecorded) as carried:
        run_publish(post, settings, keys)
    return carried.value.answer


def test_a_published_answer_arriving_after_the_sweep_gave_up_settles_the_post(
    blips: DatabaseBlips,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update={"publish_record_attempts": 1})
    post = new_post(connect("telegram"), content="answered while the database was away")
    answer = carried_answer(post, blips, settings, keys)
    with service_session() as s:  # the worker looked dead: the sweep sends it to review
        s.execute(
            Post.__table__.update()
            .where(Post.id == post.id)
            .values(publishing_started_at=utcnow() - timedelta(hours=1))
        )
    with service_session() as s:
        resolve_dead_workers(s, settings, keys)
    assert fresh(Post, post.id).status is PostStatus.NEEDS_REVIEW

    with service_session() as s:
        outcome = record_answer(s, answer, settings, keys)

    assert outcome.status is PostStatus.PUBLISHED
    stored = fresh(Post, post.id)
    (remote,) = sandbox.posts("telegram")
    assert (stored.status, stored.external_id) == (PostStatus.PUBLISHED, str(remote["id"]))
    (attempt,) = attempts_of(post)
    assert (attempt.outcome, attempt.error_code) == ("published", None)
    assert sends(sandbox, "telegram") == 1


def test_an_answer_from_another_task_is_refused(
    blips: DatabaseBlips,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update={"publish_record_attempts": 1})
    post = new_post(connect("telegram"), content="only its own task may record this")
    answer = carried_answer(post, blips, settings, keys)
    forged = answer.model_copy(update={"task_id": "someone-else"})

    with service_session() as s:
        assert record_answer(s, forged, settings, keys).status is None

    assert fresh(Post, post.id).status is PostStatus.PUBLISHING


@pytest.mark.parametrize("network", ["telegram", "linkedin"])
def test_a_run_resumed_after_the_sweep_gave_up_records_its_published_answer(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    network: str,
) -> None:
    """A worker paused (SIGSTOP, a frozen VM) past the publishing timeout: the sweep sent its
    post to review, then the run woke with the network's yes. The live run dropped that proof
    (a lost transition), where an answer handed on through record_outcome settles the post."""
    settings = pub_settings.model_copy(update={"provider_timeout_s": 10.0})
    post = new_post(connect(network), content="answered after the sweep gave up")
    sandbox.inject(network, "latency", ms=1500, path=SEND_PATH[network].lstrip("/"))

    def sweep_gives_up() -> None:
        wait_until(lambda: fresh(Post, post.id).status is PostStatus.PUBLISHING, 20, "the claim")
        with service_session() as s:
            s.execute(
                Post.__table__.update()
                .where(Post.id == post.id)
                .values(status=PostStatus.NEEDS_REVIEW, last_error_code="worker_lost")
            )

    thread = threading.Thread(target=sweep_gives_up)
    thread.start()
    outcome = run_publish(post, settings, keys)
    thread.join(timeout=30)

    assert outcome.status is PostStatus.PUBLISHED
    stored = fresh(Post, post.id)
    assert stored.status is PostStatus.PUBLISHED
    assert stored.external_id
    assert sends(sandbox, network) == 1
