"""A network that fails for everyone opens its circuit: its posts wait instead of burning
their attempts, probes find out when it is back, and then every post publishes once.

Real Postgres, the sandbox over real HTTP; the last test runs real worker processes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update

from herald.models import CircuitState, Integration, Post, PostStatus, ProviderCircuit, utcnow
from herald.publishing import circuit
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tasks.publishing import publish_signature
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.processes import StartWorker
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import attempts_of, run_publish

NewPost = Callable[..., Post]
TRIP = {
    "circuit_min_attempts": 3,
    "circuit_min_integrations": 2,
    "circuit_failure_ratio": 0.5,
    "circuit_open_s": 60.0,
    "circuit_probe_posts": 1,
}


def circuit_of(provider: str) -> ProviderCircuit | None:
    with service_session() as s:
        return s.get(ProviderCircuit, provider)


def x_posts_sent(sandbox: SandboxClient) -> int:
    return len([r for r in sandbox.requests("x") if r["method"] == "POST"])


def open_x_circuit(
    connect: ConnectFn, new_post: NewPost, sandbox: SandboxClient, settings: Settings, keys: KeyRing
) -> list[Integration]:
    """Three X accounts each fail one publish with a 503: X's circuit opens."""
    sandbox.inject("x", "error", status=503, method="POST", path="tweets")
    accounts = [connect("x") for _ in range(3)]
    for account in accounts:
        assert run_publish(new_post(account), settings, keys).status is PostStatus.RETRYING
    opened = circuit_of("x")
    assert opened is not None
    assert opened.state is CircuitState.OPEN
    return accounts


def probe_due_now() -> None:
    with service_session() as s:
        s.execute(
            update(ProviderCircuit)
            .where(ProviderCircuit.provider == "x")
            .values(probe_at=utcnow() - timedelta(seconds=1))
        )


def test_a_network_failing_for_everyone_opens_its_circuit_and_its_posts_wait_for_free(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update=TRIP)
    accounts = open_x_circuit(connect, new_post, sandbox, settings, keys)
    opened = circuit_of("x")
    assert opened is not None
    assert (opened.window_failures, opened.window_integrations) == (3, 3)
    assert opened.probe_at is not None
    assert opened.probe_at > utcnow() + timedelta(seconds=50)

    # A post already queued when it opened waits for the probe time, its budget untouched.
    waiting = new_post(accounts[0], content="queued before the circuit opened")
    assert run_publish(waiting, settings, keys).status is PostStatus.RETRYING
    held = fresh(Post, waiting.id)
    assert (held.attempts, held.last_error_code) == (0, "circuit_open")
    assert held.next_attempt_at == opened.probe_at
    assert attempts_of(waiting) == []
    assert x_posts_sent(sandbox) == 3

    # The dispatcher queues no X post, and goes on with the other networks.
    due_x = new_post(accounts[1])
    due_mastodon = new_post(connect("mastodon"))
    with service_session() as s:
        claimed = {c.post_id for c in claim_due_posts(s, settings)}
    assert due_mastodon.id in claimed
    assert due_x.id not in claimed


def test_one_failing_account_never_opens_its_networks_circuit(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update=TRIP)
    account = connect("x")
    sandbox.inject("x", "error", status=503, method="POST", path="tweets")
    for _ in range(4):
        assert run_publish(new_post(account), settings, keys).status is PostStatus.RETRYING
    assert circuit_of("x") is None


def test_half_open_lets_through_no_more_probes_than_its_bound_however_many_race(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update={**TRIP, "circuit_probe_posts": 2})
    open_x_circuit(connect, new_post, sandbox, settings, keys)
    probe_due_now()

    start = threading.Barrier(6)
    admitted: list[bool] = []

    def publish_run() -> None:
        with service_session() as s:
            start.wait()
            admitted.append(circuit.admit(s, "x", settings, utcnow()) is None)

    runs = [threading.Thread(target=publish_run) for _ in range(6)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert Counter(admitted) == {True: 2, False: 4}
    half_open = circuit_of("x")
    assert half_open is not None
    assert (half_open.state, half_open.probes_sent) == (CircuitState.HALF_OPEN, 2)


def test_a_failed_probe_reopens_the_circuit_and_an_answer_closes_it_releasing_the_posts(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update=TRIP)
    accounts = open_x_circuit(connect, new_post, sandbox, settings, keys)
    waiting = new_post(accounts[2], content="waits for the circuit")
    assert run_publish(waiting, settings, keys).status is PostStatus.RETRYING

    probe_due_now()
    assert run_publish(new_post(accounts[0]), settings, keys).status is PostStatus.RETRYING
    reopened = circuit_of("x")
    assert reopened is not None
    assert (reopened.state, reopened.openings) == (CircuitState.OPEN, 2)
    assert reopened.probe_at is not None
    assert reopened.probe_at > utcnow() + timedelta(seconds=110)  # the wait doubled

    sandbox.clear_faults()
    probe_due_now()
    assert run_publish(new_post(accounts[1]), settings, keys).status is PostStatus.PUBLISHED
    closed = circuit_of("x")
    assert closed is not None
    assert closed.state is CircuitState.CLOSED
    released = fresh(Post, waiting.id)
    assert released.next_attempt_at is not None
    assert released.next_attempt_at <= utcnow()  # due now, not at the probe time it was given


def _x_statuses() -> Counter[str]:
    with service_session() as s:
        rows = s.execute(
            select(Post.status, func.count())
            .join(Integration, Integration.id == Post.integration_id)
            .where(Integration.provider == "x")
            .group_by(Post.status)
        ).all()
    return Counter({status.value: count for status, count in rows})


def test_an_outage_of_one_network_on_real_workers_waits_then_publishes_each_post_once(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    start_worker_process: StartWorker,
) -> None:
    settings = pub_settings.model_copy(update={**TRIP, "circuit_open_s": 1.5})
    circuit_env = {f"HERALD_{key.upper()}": str(value) for key, value in TRIP.items()}
    circuit_env |= {"HERALD_CIRCUIT_OPEN_S": "1.5", "HERALD_PUBLISH_MAX_ATTEMPTS": "3"}
    x_accounts = [connect("x") for _ in range(3)]
    x_posts = [
        new_post(account, content=f"x post {i} on account {n}")
        for i in range(3)
        for n, account in enumerate(x_accounts)
    ]
    other = [new_post(connect("mastodon"), content=f"mastodon post {i}") for i in range(4)]
    sandbox.inject("x", "error", status=503, method="POST", path="tweets")
    start_worker_process(settings, name="outage", concurrency=2, **circuit_env)

    def tick() -> None:
        with service_session() as s:
            claimed = claim_due_posts(s, settings)
        for post in claimed:
            publish_signature(post).apply_async()

    def until(condition: Callable[[], bool], what: str) -> None:
        def ticked() -> bool:
            tick()
            return condition()

        eventually(ticked, timeout=60, what=what, every=0.2)

    def reopened() -> bool:
        state = circuit_of("x")
        return state is not None and state.openings >= 2

    # The other network keeps publishing; X opens, and a probe fails while X is still down.
    until(lambda: all(fresh(Post, p.id).status is PostStatus.PUBLISHED for p in other), "others")
    until(reopened, "a failed probe to reopen X's circuit")
    with service_session() as s:
        spent = s.scalars(select(Post.attempts).where(Post.id.in_([p.id for p in x_posts]))).all()
    assert _x_statuses()["failed"] == 0
    assert max(spent) <= 2  # the first try, at most one probe: nothing burnt while waiting
    assert sum(spent) < len(x_posts) * 3

    sandbox.clear_faults()
    until(lambda: _x_statuses()["published"] == len(x_posts), "every X post to publish")
    closed = circuit_of("x")
    assert closed is not None
    assert closed.state is CircuitState.CLOSED
    texts = Counter(p["text"] for p in sandbox.posts("x"))
    assert texts == Counter(p.content for p in x_posts)  # each post exactly once
    assert len(sandbox.posts("mastodon")) == len(other)


def test_a_probe_that_never_reaches_the_network_gives_its_slot_back(
    connect: ConnectFn,
    new_post: NewPost,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    settings = pub_settings.model_copy(update=TRIP)
    accounts = open_x_circuit(connect, new_post, sandbox, settings, keys)
    probe_due_now()
    too_long = new_post(accounts[0], content="x" * 300)  # refused before any call
    assert run_publish(too_long, settings, keys).status is PostStatus.FAILED
    half_open = circuit_of("x")
    assert half_open is not None
    assert (half_open.state, half_open.probes_sent) == (CircuitState.HALF_OPEN, 0)

    sandbox.clear_faults()
    assert run_publish(new_post(accounts[1]), settings, keys).status is PostStatus.PUBLISHED
    closed = circuit_of("x")
    assert closed is not None
    assert closed.state is CircuitState.CLOSED
