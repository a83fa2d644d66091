"""Integrators' webhooks end to end: subscriptions over the API, events queued with the status
change they report, signed deliveries to a real HTTP receiver on loopback (through the
outbound client), retries with backoff, and a subscription that keeps failing paused and
reported."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from herald.alerts.engine import service_sessions
from herald.api import create_app
from herald.models import (
    DeliveryStatus,
    EventCount,
    Post,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from herald.security import signing
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.webhooks import subscriptions
from herald.webhooks.delivery import budget_s, deliver_due
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.alerts.conftest import Receiver
from tests.integration.api.conftest import member_headers, race
from tests.integration.publishing.test_publish_outcomes import run_publish


def _settings(pub_settings: Settings, **update: Any) -> Settings:
    return pub_settings.model_copy(update={"outbound_allow_hosts": ["127.0.0.1"], **update})


def _subscribe(workspace_id: uuid.UUID, url: str, settings: Settings, keys: KeyRing) -> str:
    with service_session() as s:
        return subscriptions.create(
            s,
            workspace_id,
            url=url,
            events=["post.published", "post.failed"],
            keys=keys,
            settings=settings,
        ).secret


def _published_to(
    receiver: Receiver,
    pub_settings: Settings,
    keys: KeyRing,
    integration: Any,
    posts: list[Post],
    **settings_update: Any,
) -> Settings:
    """The settings under which ``receiver`` subscribes to ``integration``'s workspace and
    ``posts`` are then published (their deliveries queued)."""
    settings = _settings(pub_settings, **settings_update)
    _subscribe(integration.workspace_id, f"{receiver.url}/hook", settings, keys)
    for post in posts:
        run_publish(post, settings, keys)
    return settings


def _deliver(settings: Settings, keys: KeyRing, **kw: Any) -> Any:
    return deliver_due(service_sessions("test"), settings, keys, **kw)


def test_the_subscriptions_api_answers_the_secret_once_and_refuses_private_urls(
    pub_settings: Settings, connect: ConnectFn, receiver: Receiver
) -> None:
    workspace_id = connect("mastodon").workspace_id
    headers = member_headers(workspace_id)
    with TestClient(create_app(_settings(pub_settings))) as client:
        created = client.post(
            "/api/postiz/webhooks",
            json={"url": f"{receiver.url}/hook", "events": ["post.published"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        assert created.json()["secret"].startswith("whsec_")
        listed = client.get("/api/postiz/webhooks", headers=headers).json()
        assert [row["id"] for row in listed] == [created.json()["id"]]
        assert "secret" not in listed[0]
        private = client.post(
            "/api/postiz/webhooks",
            json={"url": "http://10.0.0.7/hook", "events": ["post.failed"]},
            headers=headers,
        )
        assert private.status_code == 422
        assert private.json()["error"]["code"] == "url_refused"
        hook = created.json()["id"]
        assert client.delete(f"/api/postiz/webhooks/{hook}", headers=headers).status_code == 204
        assert client.get("/api/postiz/webhooks", headers=headers).json() == []


def test_a_workspace_holds_a_bounded_number_of_subscriptions_even_when_asked_at_once(
    pub_settings: Settings, connect: ConnectFn, receiver: Receiver
) -> None:
    workspace_id = connect("mastodon").workspace_id
    headers = member_headers(workspace_id)
    body = {"url": f"{receiver.url}/hook", "events": ["post.published"]}
    with TestClient(create_app(_settings(pub_settings, webhook_max_subscriptions=3))) as client:

        def subscribe() -> Any:
            return client.post("/api/postiz/webhooks", json=body, headers=headers)

        assert subscribe().status_code == 201
        answers = race(subscribe, subscribe, subscribe)
        assert sorted(a.status_code for a in answers) == [201, 201, 409]
        refused = next(a for a in answers if a.status_code == 409)
        assert refused.json()["error"]["code"] == "webhook_limit_reached"
        assert "HERALD_WEBHOOK_MAX_SUBSCRIPTIONS=3" in refused.json()["error"]["message"]
        listed = client.get("/api/postiz/webhooks", headers=headers).json()
        assert len(listed) == 3
        client.delete(f"/api/postiz/webhooks/{listed[0]['id']}", headers=headers)
        assert subscribe().status_code == 201  # one deleted: room for one


def test_a_published_and_a_failed_post_are_delivered_signed_each_with_its_own_id(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
    sandbox: Any,
) -> None:
    settings = _settings(pub_settings)
    integration = connect("mastodon")
    secret = _subscribe(integration.workspace_id, f"{receiver.url}/hook", settings, keys)
    published = new_post(integration, content="hello integrators", correlation_id="corr-hook")
    refused = new_post(integration, content="refused for good")
    run_publish(published, settings, keys)
    sandbox.inject("mastodon", "error", status=422, method="POST", times=1)
    run_publish(refused, settings, keys)

    report = _deliver(settings, keys)

    assert (report.sent, report.retrying) == (2, 0)
    bodies = {}
    for request in receiver.requests:
        delivery_id = signing.verify(secret, request.headers, request.body)
        body = request.json()
        assert body["id"] == delivery_id
        bodies[body["event"]] = body
    assert len({r.headers["X-Herald-Delivery"] for r in receiver.requests}) == 2
    ok = bodies["post.published"]["data"]
    assert ok["post_id"] == str(published.id)
    assert ok["status"] == "published"
    assert ok["url"] == fresh(Post, published.id).external_url
    assert ok["correlation_id"] == "corr-hook"
    failed = bodies["post.failed"]["data"]
    assert (failed["status"], failed["error"]["code"]) == ("failed", "permanent")
    # Sent means sent: a second run delivers nothing again.
    assert _deliver(settings, keys).sent == 0


def test_no_delivery_carries_a_cookie_an_earlier_answer_set(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """A run's deliveries share one client, whatever their workspace: a cookie one receiver's
    answer set must not go back with the next delivery to that host."""
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(2)]
    settings = _published_to(receiver, pub_settings, keys, integration, posts)
    receiver.cookie = "session=receiver-a; Path=/"

    assert _deliver(settings, keys).sent == 2

    assert [r.headers.get("Cookie") for r in receiver.requests] == [None, None]


def test_a_failing_receiver_is_retried_with_backoff_then_paused_and_reported(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(2)]
    settings = _published_to(
        receiver,
        pub_settings,
        keys,
        integration,
        posts,
        webhook_max_attempts=2,
        webhook_pause_after=3,
    )
    receiver.answers = [500] * 10

    first = _deliver(settings, keys)
    assert (first.sent, first.retrying) == (0, 2)
    assert _deliver(settings, keys).retrying == 0  # not due yet: the backoff holds them
    later = _deliver(settings, keys, now=utcnow() + timedelta(hours=2))

    assert later.paused == 1
    with service_session() as s:
        subscription = s.scalars(select(WebhookSubscription)).one()
        assert subscription.status is SubscriptionStatus.PAUSED
        assert "HTTP 500" in (subscription.paused_reason or "")
        statuses = s.scalars(select(WebhookDelivery.status)).all()
        counted = s.scalar(
            select(func.sum(EventCount.count)).where(
                EventCount.name == "webhooks.subscription_paused"
            )
        )
    assert set(statuses) == {DeliveryStatus.FAILED}
    assert counted == 1
    assert len(receiver.requests) == 3  # two first tries, one retry; then paused
    # Nothing more is queued for a paused subscription until it is resumed.
    run_publish(new_post(integration, content="while paused"), settings, keys)
    with service_session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 2


def _deliver_to_an_endless_answer(
    pub_settings: Settings,
    keys: KeyRing,
    integration: Any,
    post: Post,
    receiver: Receiver,
    **settings_update: Any,
) -> Any:
    """Deliver ``post``'s event to ``receiver`` answering without end (or, with ``trickle_s``
    set on it, trickling); the report, which must come within 20 s."""
    settings = _published_to(receiver, pub_settings, keys, integration, [post], **settings_update)
    receiver.endless = not receiver.trickle_s
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(_deliver(settings, keys)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done, "the delivery was still reading the receiver's answer after 20 s"
    return done[0]


def test_a_receiver_answering_without_end_does_not_hold_the_delivery(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """Only the receiver's status is read: a body that never ends (each chunk well within the
    read timeout) held the delivery, and the task running it, for as long as it flowed."""
    integration = connect("mastodon")
    post = new_post(integration, content="to an endless receiver")
    report = _deliver_to_an_endless_answer(pub_settings, keys, integration, post, receiver)
    assert (report.sent, report.retrying) == (1, 0)


def test_a_receiver_trickling_its_answer_does_not_hold_the_delivery(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """The status line and headers one byte every 0.3 s (about 13 s in all), each byte within
    the 1 s read timeout: the delivery has the outbound timeout in all, then tries again later."""
    integration = connect("mastodon")
    post = new_post(integration, content="to a trickling receiver")
    receiver.trickle_s = 0.3
    report = _deliver_to_an_endless_answer(
        pub_settings, keys, integration, post, receiver, outbound_timeout_s=1.0
    )
    assert (report.sent, report.retrying) == (0, 1)
    with service_session() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert delivery.last_error == "ReadTimeout while sending"


def test_a_redirect_answering_without_end_is_refused_not_followed(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """httpx reads a redirect's body before it follows it: one that never ends is refused once
    it passes the outbound client's bound, not read for as long as it flows."""
    integration = connect("mastodon")
    post = new_post(integration, content="to a redirecting receiver")
    receiver.location, receiver.answers = f"{receiver.url}/next", [307]
    report = _deliver_to_an_endless_answer(pub_settings, keys, integration, post, receiver)
    assert (report.sent, report.retrying) == (0, 1)
    with service_session() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert "a redirect with a body of more than" in (delivery.last_error or "")


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_turn_the_delivery_into_a_get_fails_it(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
    status: int,
) -> None:
    """A 301, 302 or 303 makes an HTTP client send the POST again as a GET without its body (an
    http→https redirect, a moved endpoint): the receiver's landing page answering 200 counted
    as a delivered event nobody received. It is a failed attempt that names the redirect; a 307
    or 308, which keeps the method and the signed body, is followed."""
    integration = connect("mastodon")
    post = new_post(integration, content="to a moved receiver")
    receiver.location, receiver.answers = f"{receiver.url}/moved", [status]
    settings = _published_to(receiver, pub_settings, keys, integration, [post])

    report = _deliver(settings, keys)

    assert (report.sent, report.retrying) == (0, 1)
    assert [r.path for r in receiver.requests] == ["/hook"]  # no GET followed it
    with service_session() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert f"redirects with {status}" in (delivery.last_error or "")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.2/x", "refused destination: 127.0.0.2 is a loopback address"),
        # No resolver takes a label over 63 characters: its UnicodeError escaped every run, and
        # this one 307 stopped every workspace's deliveries.
        (f"http://{'b' * 64}.example.com/x", "not a valid host name"),
    ],
)
def test_a_redirect_to_a_refused_destination_fails_the_attempt_saying_why_once(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
    target: str,
    reason: str,
) -> None:
    integration = connect("mastodon")
    post = new_post(integration, content="to a receiver that sends us elsewhere")
    receiver.location, receiver.answers = target, [307]
    settings = _published_to(receiver, pub_settings, keys, integration, [post])

    report = _deliver(settings, keys)

    assert (report.sent, report.retrying) == (0, 1)
    with service_session() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
    assert reason in (delivery.last_error or "")
    assert (delivery.last_error or "").count("refused destination") <= 1


def test_a_pause_fails_every_pending_delivery_of_the_subscription(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """Deliveries already tried and waiting for their retry stayed pending through a pause, and
    a resume sent them: events from before the pause, where the docs promise only new ones."""
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(3)]
    settings = _published_to(
        receiver, pub_settings, keys, integration, posts, webhook_pause_after=2
    )
    receiver.answers = [500] * 10

    report = _deliver(settings, keys)

    assert report.paused == 1
    with service_session() as s:
        deliveries = s.scalars(select(WebhookDelivery)).all()
    assert {d.status for d in deliveries} == {DeliveryStatus.FAILED}
    assert len(receiver.requests) == 2


def test_concurrent_deliverers_count_every_failure(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """Each deliverer read the subscription's failure count and wrote it back plus one: four
    at once lost most of the counts (5 of 20), so a pause came late, under a wrong reason."""
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(16)]
    settings = _published_to(
        receiver, pub_settings, keys, integration, posts, webhook_pause_after=100
    )
    receiver.answers = [500] * 100
    threads = [threading.Thread(target=_deliver, args=(settings, keys)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with service_session() as s:
        subscription = s.scalars(select(WebhookSubscription)).one()
    assert len(receiver.requests) == 16
    assert subscription.consecutive_failures == 16


def test_a_run_starts_no_delivery_past_its_budget(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """A run went on delivering up to its batch, past the task's soft time limit: the delivery
    the limit cut off was sent and never recorded, so a receiver slow within its timeout got
    duplicates on every run. A run now stops starting deliveries once its budget is spent."""
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(3)]
    settings = _published_to(receiver, pub_settings, keys, integration, posts)

    spent = _deliver(settings, keys, budget=0.0)
    assert (spent.sent, spent.deferred) == (1, 2)  # one at least, whatever the budget
    assert len(receiver.requests) == 1
    assert _deliver(settings, keys).sent == 2
    assert 0 < budget_s(settings) < settings.task_soft_time_limit_s - settings.outbound_timeout_s


def test_concurrent_deliverers_pause_a_failing_subscription_once_without_deadlock(
    pub_settings: Settings,
    keys: KeyRing,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    receiver: Receiver,
) -> None:
    """The pause failed the subscription's pending deliveries while other deliverers held some
    of them (each holds its delivery's row while it sends) and waited for the subscription's
    row the pausing one held: Postgres ended one of them as a deadlock, mid-run."""
    integration = connect("mastodon")
    posts = [new_post(integration, content=f"post {n}") for n in range(16)]
    settings = _published_to(
        receiver, pub_settings, keys, integration, posts, webhook_pause_after=3
    )
    receiver.answers = [500] * 100
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            _deliver(settings, keys)
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    for _ in range(3):  # a few rounds: the interleaving differs each time
        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    with service_session() as s:
        subscription = s.scalars(select(WebhookSubscription)).one()
        statuses = s.scalars(select(WebhookDelivery.status)).all()
    assert subscription.status is SubscriptionStatus.PAUSED
    assert set(statuses) == {DeliveryStatus.FAILED}
