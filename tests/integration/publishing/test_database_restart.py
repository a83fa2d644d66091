"""Postgres going away and coming back while a worker publishes: nothing lost, nothing twice.

On a Postgres of this test's own (the shared one is never stopped): posts are claimed and their
messages queued, the worker starts publishing them, and the database stops in the middle, with
posts in every state (queued, claimed, at the network, recording their outcome). When it is
back, every post is published, and the sandbox received each exactly once."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import func, select

from herald import db
from herald.models import Post
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.brokers import Broker
from tests.fixtures.database import application_engines, service_session
from tests.fixtures.factories import make_workspace
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import connect_account, due_posts
from tests.fixtures.servers import PostgresServer

POSTS = 200


def _statuses() -> Counter[str]:
    with service_session() as s:
        rows = s.execute(select(Post.status, func.count()).group_by(Post.status)).all()
    return Counter({status.value: count for status, count in rows})


def _events(log: str, record_tries: int) -> set[str]:
    """The worker log's events, with ``outcome_handed_on`` for a write's last try spent."""
    seen: set[str] = set()
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        seen.add(str(entry.get("event")))
        if (
            entry.get("event") == "publish.record_retry"
            and entry.get("attempt", 0) >= record_tries - 1
        ):
            seen.add("outcome_handed_on")
    return seen


@pytest.mark.slow
def test_a_postgres_restart_while_posts_publish_loses_none_and_publishes_none_twice(
    private_postgres: PostgresServer,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    start_worker_process: StartWorker,
    redis_broker: Broker,
) -> None:
    engine = db.make_engine(private_postgres.url)
    with application_engines(engine, engine):
        with service_session() as s:
            workspace = make_workspace(s)
        networks = ("mastodon", "bluesky")
        due_posts([connect_account(sandbox, workspace, keys, n) for n in networks], POSTS)
        worker = start_worker_process(
            pub_settings,
            name="postgres-restart",
            broker=redis_broker,
            HERALD_DATABASE_URL=private_postgres.url,
            HERALD_SERVICE_DATABASE_URL=private_postgres.url,
        )
        with service_session() as s:
            claimed = claim_due_posts(s, pub_settings)
        assert len(claimed) == POSTS
        for post in claimed:
            redis_broker.send(publish_signature(post))

        eventually(lambda: len(sandbox.posts()) >= POSTS // 5, 60, "a fifth of the posts out")
        tries = pub_settings.publish_record_attempts
        private_postgres.stop()
        # Down until other publishes have failed their claim and been retried, and until the
        # outcome of any publish caught writing it has outlasted its writer's tries (and was
        # handed on to record_outcome).
        eventually(
            lambda: _events(worker.log.read_text(errors="replace"), tries),
            60,
            "the worker to retry a claim and to hand on an outcome it could not write",
            until=lambda seen: (
                "task.retrying" in seen
                and ("publish.record_retry" not in seen or "outcome_handed_on" in seen)
            ),
            every=0.2,
        )
        private_postgres.start()

        eventually(
            _statuses,
            120,
            f"all {POSTS} posts published",
            until=lambda counts: counts["published"] == POSTS,
            every=0.5,
        )
    received = Counter(post["text"] for post in sandbox.posts())
    assert len(received) == POSTS, len(received)
    assert set(received.values()) == {1}, [text for text, n in received.items() if n > 1]
