"""The common case in two statements, and every other case decided as the general path decides.

Real Postgres and the sandbox over HTTP. The adapter of the network is built first (as after a
worker's first post of that network), which is when a publish takes the one-statement claim.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text, update

from herald import db
from herald.models import (
    CircuitState,
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    ProviderCircuit,
    PublishAttempt,
    WebhookDelivery,
    utcnow,
)
from herald.providers.base import EXTERNAL_ID_CHARS
from herald.providers.registry import provider_for
from herald.publishing import fastpath
from herald.publishing.publisher import publish_post
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.telemetry.context import PID_NAMESPACE, process_name
from herald.webhooks import subscriptions
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import attempts_of

NewPost = Callable[..., Post]


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements the publish path sends (it runs in the service scope)."""
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = db.get_service_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def queued(post: Post) -> Post:
    with service_session() as s:
        s.execute(update(Post).where(Post.id == post.id).values(status=PostStatus.QUEUED))
    return post


def publish(post: Post, settings: Settings, keys: KeyRing) -> Any:
    with service_session() as s:
        return publish_post(s, post.id, settings, keys, task_id="task-1")


@pytest.fixture
def warm(pub_settings: Settings) -> Callable[[str], Settings]:
    """Build the adapter of a network, as a worker's first post of it does."""

    def _warm(network: str) -> Settings:
        provider_for(network, pub_settings)
        return pub_settings

    return _warm


def test_a_due_post_is_claimed_and_recorded_in_two_statements(
    warm: Callable[[str], Settings], keys: KeyRing, connect: ConnectFn, new_post: NewPost
) -> None:
    settings = warm("mastodon")
    post = queued(new_post(connect("mastodon"), correlation_id="corr-fast"))

    with statements() as sent:
        outcome = publish(post, settings, keys)

    assert outcome.status is PostStatus.PUBLISHED
    assert len(sent) == 2, sent
    stored = fresh(Post, post.id)
    assert (stored.status, stored.attempts) == (PostStatus.PUBLISHED, 1)
    assert stored.external_id
    assert stored.external_url
    assert stored.published_at is not None
    assert stored.publishing_started_at is not None
    [attempt] = attempts_of(post)
    assert (attempt.attempt_number, attempt.outcome, attempt.task_id) == (1, "published", "task-1")
    assert attempt.provider == "mastodon"
    assert attempt.correlation_id == "corr-fast"
    assert (attempt.worker, attempt.process_ns) == (process_name(), PID_NAMESPACE)
    assert attempt.finished_at is not None
    assert attempt.latency_ms is not None


def test_the_published_event_is_queued_for_each_listening_subscription_with_the_post(
    warm: Callable[[str], Settings], keys: KeyRing, connect: ConnectFn, new_post: NewPost
) -> None:
    settings = warm("mastodon").model_copy(update={"outbound_allow_hosts": ["127.0.0.1"]})
    provider_for("mastodon", settings)  # the adapter is per settings object
    integration = connect("mastodon")
    listening = []
    with service_session() as s:
        for events in (["post.published"], ["post.published", "post.failed"], ["post.failed"]):
            listening.append(
                subscriptions.create(
                    s,
                    integration.workspace_id,
                    url="http://127.0.0.1:9/hook",
                    events=events,
                    keys=keys,
                    settings=settings,
                ).subscription.id
            )
    post = queued(new_post(integration, correlation_id="corr-hook"))

    with statements() as sent:
        assert publish(post, settings, keys).status is PostStatus.PUBLISHED

    assert len(sent) == 2
    stored = fresh(Post, post.id)
    with service_session() as s:
        deliveries = list(s.scalars(select(WebhookDelivery)))
    assert {d.subscription_id for d in deliveries} == set(listening[:2])
    for delivery in deliveries:
        assert delivery.event == "post.published"
        assert delivery.workspace_id == integration.workspace_id
        assert delivery.payload == {
            "id": str(delivery.id),
            "event": "post.published",
            "created_at": delivery.payload["created_at"],
            "workspace_id": str(integration.workspace_id),
            "data": {
                "post_id": str(post.id),
                "integration_id": str(integration.id),
                "status": "published",
                "correlation_id": "corr-hook",
                "external_id": stored.external_id,
                "url": stored.external_url,
            },
        }
    assert len({d.id for d in deliveries}) == 2


def _needs_reauth(integration: Integration) -> None:
    _integration(integration, status=IntegrationStatus.NEEDS_REAUTH)


def _disabled(integration: Integration) -> None:
    _integration(integration, status=IntegrationStatus.DISABLED)


def _rate_limited(integration: Integration) -> None:
    _integration(integration, rate_limited_until=utcnow() + timedelta(minutes=5))


def _circuit_open(integration: Integration) -> None:
    with service_session() as s:
        s.add(_circuit(integration.provider, CircuitState.OPEN, probes_sent=0))


def _circuit(provider: str, state: CircuitState, *, probes_sent: int) -> ProviderCircuit:
    return ProviderCircuit(
        provider=provider,
        state=state,
        opened_at=utcnow(),
        probe_at=utcnow() + timedelta(minutes=5),
        probes_sent=probes_sent,
        openings=1,
        reason="test",
    )


def _integration(integration: Integration, **values: Any) -> None:
    with service_session() as s:
        s.execute(update(Integration).where(Integration.id == integration.id).values(**values))


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        (_needs_reauth, PostStatus.RETRYING, "integration_needs_reauth"),
        (_disabled, PostStatus.FAILED, "integration_disabled"),
        (_rate_limited, PostStatus.RETRYING, None),
        (_circuit_open, PostStatus.RETRYING, "circuit_open"),
    ],
    ids=["needs_reauth", "disabled", "rate_limited", "circuit_open"],
)
def test_what_the_one_statement_claim_refuses_is_judged_by_the_preflight(
    warm: Callable[[str], Settings],
    keys: KeyRing,
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    setup: Callable[[Integration], None],
    status: PostStatus,
    code: str | None,
) -> None:
    settings = warm("mastodon")
    integration = connect("mastodon")
    post = queued(new_post(integration))
    setup(integration)

    outcome = publish(post, settings, keys)

    stored = fresh(Post, post.id)
    assert (outcome.status, stored.status) == (status, status)
    assert stored.last_error_code == code
    assert stored.attempts == 0  # no attempt spent, nothing sent
    assert attempts_of(post) == []
    assert [r for r in sandbox.requests("mastodon") if r["method"] == "POST"] == []


def test_a_post_not_yet_due_or_already_claimed_is_left_alone(
    warm: Callable[[str], Settings], keys: KeyRing, connect: ConnectFn, new_post: NewPost
) -> None:
    settings = warm("mastodon")
    integration = connect("mastodon")
    early = queued(new_post(integration, scheduled_at=utcnow() + timedelta(minutes=1)))
    taken = new_post(integration, status=PostStatus.PUBLISHING)

    not_due = publish(early, settings, keys)
    assert (not_due.kind, not_due.not_before) == ("not_due", fresh(Post, early.id).scheduled_at)
    assert publish(taken, settings, keys).kind == "not_claimed"
    assert fresh(Post, early.id).status is PostStatus.QUEUED
    assert fresh(Post, taken.id).status is PostStatus.PUBLISHING
    assert attempts_of(early) == attempts_of(taken) == []


@pytest.mark.parametrize("path", ["one statement", "general"])
def test_a_stray_message_never_claims_a_retrying_post_before_its_next_attempt(
    warm: Callable[[str], Settings],
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    path: str,
) -> None:
    """A second message for one post (the sweep's resend after a backlog, a redelivery, a
    producer's) finds it ``retrying`` in its backoff, or waiting with no next attempt (for its
    user): it claims nothing. Before, each such message spent an attempt at once, and a few
    duplicates failed a post within seconds."""
    # The general path is the one a process takes before it has built the network's adapter.
    settings = warm("mastodon") if path == "one statement" else pub_settings.model_copy()
    integration = connect("mastodon")
    backing_off = new_post(
        integration,
        status=PostStatus.RETRYING,
        next_attempt_at=utcnow() + timedelta(minutes=1),
        attempts=1,
    )
    waiting = new_post(integration, status=PostStatus.RETRYING, next_attempt_at=None, attempts=1)

    for post in (backing_off, waiting):
        assert publish(post, settings, keys).status in (None, PostStatus.RETRYING)
        stored = fresh(Post, post.id)
        assert (stored.status, stored.attempts) == (PostStatus.RETRYING, 1)
        assert attempts_of(post) == []
    assert [r for r in sandbox.requests("mastodon") if r["method"] == "POST"] == []


def test_a_refused_answer_after_the_one_statement_claim_is_recorded_by_the_general_path(
    warm: Callable[[str], Settings],
    keys: KeyRing,
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
) -> None:
    settings = warm("mastodon")
    post = queued(new_post(connect("mastodon")))
    sandbox.inject("mastodon", "error", status=422, method="POST", times=1)

    outcome = publish(post, settings, keys)

    stored = fresh(Post, post.id)
    assert (outcome.status, stored.status) == (PostStatus.FAILED, PostStatus.FAILED)
    [attempt] = attempts_of(post)
    assert (attempt.outcome, attempt.http_status) == ("failed", 422)
    assert attempt.finished_at is not None


def test_a_circuit_half_opened_during_the_call_is_closed_by_the_published_answer(
    warm: Callable[[str], Settings],
    keys: KeyRing,
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
) -> None:
    settings = warm("mastodon")
    integration = connect("mastodon")
    post = queued(new_post(integration))
    waiting = new_post(
        integration,
        status=PostStatus.RETRYING,
        next_attempt_at=utcnow() + timedelta(minutes=5),
        last_error_code="circuit_open",
    )
    sandbox.inject("mastodon", "latency", ms=1500, method="POST", times=1)
    outcomes: list[Any] = []
    call = threading.Thread(target=lambda: outcomes.append(publish(post, settings, keys)))
    call.start()
    try:
        eventually(lambda: attempts_of(post), what="the claim's attempt row")
        with service_session() as s:
            # Nothing is held open across the network call.
            held = s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
                )
            )
            s.add(_circuit("mastodon", CircuitState.HALF_OPEN, probes_sent=1))
    finally:
        call.join(timeout=30)
    assert held == 0
    assert outcomes[0].status is PostStatus.PUBLISHED
    circuit = fresh(ProviderCircuit, "mastodon")
    assert circuit.state is CircuitState.CLOSED
    assert fresh(Post, waiting.id).next_attempt_at <= utcnow()  # released at once
    assert fresh(PublishAttempt, attempts_of(post)[0].id).outcome == "published"


@pytest.mark.parametrize("statement", ["claim", "published"])
def test_the_two_statements_are_rendered_once_not_on_every_run(statement: str) -> None:
    """No expanding (``IN`` list) parameter: SQLAlchemy would render the statement's text again
    on every execution, about a tenth of the claim's client CPU."""
    built = (
        fastpath._claim_statement(True) if statement == "claim" else fastpath._published_statement()
    )
    compiled = built.compile(dialect=db.get_service_engine().dialect)
    assert not compiled.post_compile_params
    assert "POSTCOMPILE" not in str(compiled)


def test_a_published_answer_with_an_id_and_url_past_the_columns_is_recorded_published(
    warm: Callable[[str], Settings],
    keys: KeyRing,
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
) -> None:
    """A network (a self-hosted Mastodon, a buggy API) says yes with an id longer than any
    network's, holding a NUL, and a URL past the column: the post is published, and stays so
    (before, the write failed and the post waited in publishing for the sweep, whose own
    write failed the same way until it gave the post to review)."""
    settings = warm("mastodon")
    post = queued(new_post(connect("mastodon")))
    long_id = "1\u0000" + "9" * 700
    sandbox.inject(
        "mastodon",
        "garble",
        status=200,
        body=json.dumps({"id": long_id, "url": "https://mastodon.example/@a/" + "u" * 3000}),
        applied=True,
        method="POST",
        path="/api/v1/statuses",
        times=1,
    )

    assert publish(post, settings, keys).status is PostStatus.PUBLISHED

    stored = fresh(Post, post.id)
    assert stored.status is PostStatus.PUBLISHED
    assert stored.external_id == ("1\ufffd" + "9" * 700)[:EXTERNAL_ID_CHARS]
    assert stored.external_url is None  # a URL cut short would lead elsewhere
