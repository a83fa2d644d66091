"""A producer's request (schedule, reschedule, cancel) is done or kept, whatever its message's
headers say. The message is the request's only copy: an ``expires`` that passes before a worker
runs it, a ``timelimit`` no task can meet, or a run that fails must not leave it only in a log
line. And a message's workspace header is only its sender's word: what is recorded names the
workspace its payload is for."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from herald.models import DeadLetter, Post, utcnow
from herald.settings import Settings
from tests.fixtures.brokers import Broker
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_workspace
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn

SCHEDULE = "herald.posts.schedule"


def _request(integration: Any, key: str, **changes: Any) -> dict[str, Any]:
    return {
        "workspace_id": str(integration.workspace_id),
        "integration_id": str(integration.id),
        "content": f"a producer's request ({key})",
        "scheduled_at": (utcnow() + timedelta(hours=1)).isoformat(),
        "idempotency_key": key,
        **changes,
    }


def _letter(task_id: str) -> DeadLetter | None:
    with service_session() as s:
        return s.scalars(select(DeadLetter).where(DeadLetter.task_id == task_id)).first()


def _post(key: str) -> Post | None:
    with service_session() as s:
        return s.scalars(select(Post).where(Post.idempotency_key == key)).first()


def test_a_request_whose_message_expired_unrun_is_kept_and_one_with_a_short_time_limit_is_done(
    connect: ConnectFn,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    integration = connect("mastodon")
    start_worker_process(pub_settings, name="requests", broker=redis_broker)
    expired, limited = str(uuid.uuid4()), str(uuid.uuid4())

    redis_broker.app.send_task(
        SCHEDULE,
        kwargs=_request(integration, "expired"),
        task_id=expired,
        expires=utcnow() - timedelta(days=1),
    )
    # Celery's header for these is (hard, soft); a 1 ms soft limit used to kill the run.
    redis_broker.app.send_task(
        SCHEDULE,
        kwargs=_request(integration, "limited"),
        task_id=limited,
        soft_time_limit=0.001,
        time_limit=0.01,
    )

    letter = eventually(lambda: _letter(expired), 30, "the expired request's dead letter")
    assert "expired unrun" in letter.reason
    assert letter.payload["idempotency_key"] == "expired"  # the request, kept to be sent again
    assert letter.workspace_id == integration.workspace_id
    assert _post("expired") is None

    post = eventually(lambda: _post("limited"), 30, "the time-limited request to be done")
    assert post.content == "a producer's request (limited)"
    assert _letter(limited) is None


def test_a_refused_request_is_recorded_under_its_payloads_workspace_not_its_headers(
    connect: ConnectFn,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    ours = connect("mastodon")
    with service_session() as s:
        theirs = make_workspace(s)
    start_worker_process(pub_settings, name="headers", broker=redis_broker)
    task_id = str(uuid.uuid4())

    redis_broker.app.send_task(
        SCHEDULE,
        kwargs=_request(ours, "too-long", content="x" * 100_000),
        task_id=task_id,
        headers={"x_workspace_id": str(theirs.id)},
    )

    letter = eventually(lambda: _letter(task_id), 30, "the refused request's dead letter")
    assert letter.workspace_id == ours.workspace_id


@contextmanager
def _posts_locked(engine: Engine, released: threading.Event) -> Iterator[None]:
    """Hold an exclusive lock on ``posts`` (in another thread) until ``released`` is set."""
    locked = threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            released.wait(60)
            conn.rollback()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(10), "the lock was not taken"
    try:
        yield
    finally:
        released.set()
        holder.join(10)


def test_a_request_whose_run_fails_is_kept_as_a_dead_letter(
    connect: ConnectFn,
    committed: Engine,
    pub_settings: Settings,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    integration = connect("mastodon")
    # The shortest limits the settings allow beside a 2 s provider call.
    start_worker_process(
        pub_settings,
        name="failing",
        broker=redis_broker,
        HERALD_TASK_SOFT_TIME_LIMIT_S="3",
        HERALD_TASK_TIME_LIMIT_S="4",
    )
    task_id = str(uuid.uuid4())
    released = threading.Event()

    with _posts_locked(committed, released):
        redis_broker.app.send_task(SCHEDULE, kwargs=_request(integration, "fails"), task_id=task_id)
        letter = eventually(lambda: _letter(task_id), 60, "the failed request's dead letter")

    assert "the task failed" in letter.reason, letter.reason
    assert "TimeLimitExceeded" in letter.reason, letter.reason
    assert letter.payload["idempotency_key"] == "fails"
    assert letter.workspace_id == integration.workspace_id
