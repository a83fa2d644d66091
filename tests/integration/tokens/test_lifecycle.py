"""The token lifecycle end to end: many racing refreshes of one rotating grant, a grant that
dies (needs_reauth once, posts wait, one notification, resume after a reconnect), and beat's
sweep with per-network margins — against the real Postgres, the sandbox over HTTP and, where
the flow crosses tasks, a real worker on the real broker."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import func, select

from herald.alerts.defaults import install
from herald.alerts.engine import check_alerts
from herald.models import (
    Alert,
    AlertRule,
    AuditEvent,
    EventCount,
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    WebhookDelivery,
    Workspace,
    utcnow,
)
from herald.publishing.dispatch import claim_due_posts
from herald.reauth import WAITING_CODE
from herald.sandbox import SandboxClient
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.refresh import refresh_integration
from herald.webhooks import subscriptions
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh, ticking_until
from tests.integration.tokens.support import (
    revoked_tokens,
    set_integration,
    token_calls,
)
from tests.integration.tokens.test_refresh_outcomes import reconnect

TRIALS = 100


def test_a_hundred_trials_of_racing_refreshes_each_call_a_rotating_network_once(
    connect: ConnectFn, sandbox: SandboxClient, pub_settings: Settings, keys: KeyRing
) -> None:
    """X rotates its refresh token and revokes the whole family when a spent one comes back:
    a second call in any trial would disconnect the account."""
    integration = connect("x")
    rng = random.Random(11)
    started = time.monotonic()
    seen = integration.token_version
    with ThreadPoolExecutor(max_workers=10) as pool:
        for trial in range(TRIALS):
            racers = rng.randint(2, 10)
            start = threading.Barrier(racers)

            def one(seen: int = seen, start: threading.Barrier = start) -> str:
                start.wait(timeout=30)
                with service_session() as s:
                    return refresh_integration(
                        s, integration.id, pub_settings, keys, seen_version=seen
                    ).outcome

            results = list(pool.map(lambda _: one(), range(racers)))
            assert sorted(results) == ["lost_race"] * (racers - 1) + ["refreshed"], trial
            seen += 1
    # One refresh won each trial, so a hundred calls in all means exactly one per trial (a
    # second call would also have revoked the family, and the next trial could not refresh).
    assert len(token_calls(sandbox, "x")) == TRIALS
    after = fresh(Integration, integration.id)
    assert after.status is IntegrationStatus.ACTIVE
    assert after.token_version == integration.token_version + TRIALS
    assert revoked_tokens(sandbox, "x", integration.external_account_id) == []  # no reuse
    assert time.monotonic() - started < 60


def _audit_events(integration: Integration) -> list[AuditEvent]:
    with service_session() as s:
        return list(
            s.scalars(
                select(AuditEvent).where(
                    AuditEvent.resource_id == str(integration.id),
                    AuditEvent.event_type == "token.refresh.failed",
                )
            )
        )


def _counted(name: str) -> int:
    with service_session() as s:
        total = s.scalar(select(func.sum(EventCount.count)).where(EventCount.name == name))
    return int(total or 0)


def test_a_revoked_refresh_token_cuts_the_connection_once_its_posts_wait_and_resume(
    connect: ConnectFn,
    workspace: Workspace,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    process_settings: Settings,
    keys: KeyRing,
    celery_app: Celery,
    worker: Any,
) -> None:
    integration = connect("x")
    refresh_token = open_tokens(integration, keys).refresh_token
    assert refresh_token
    sandbox.revoke_token(refresh_token)  # the user removed the app at X
    sandbox.expire_tokens("x", integration.external_account_id)  # and the access token ran out
    posts = [new_post(integration, content=f"waits {n}") for n in range(3)]
    with service_session() as s:
        subscriptions.create(
            s,
            workspace.id,
            url="https://hooks.example.com/herald",
            events=["integration.needs_reauth", "integration.reconnected"],
            keys=keys,
            settings=process_settings,
        )

    eventually(
        ticking_until(
            celery_app,
            lambda: (
                fresh(Integration, integration.id).status is IntegrationStatus.NEEDS_REAUTH
                and all(fresh(Post, p.id).last_error_code == WAITING_CODE for p in posts)
            ),
        ),
        what="the connection to need its user and every post to wait",
    )
    assert len(token_calls(sandbox, "x")) == 1  # one refresh, however many posts were refused
    # Nothing failed; the dispatcher leaves the posts alone while the user is away.
    assert {fresh(Post, p.id).status for p in posts} == {PostStatus.RETRYING}
    with service_session() as s:
        assert claim_due_posts(s, process_settings) == []
    # One notification: one audit event, one count, which the default rule turns into an alert.
    assert len(_audit_events(integration)) == 1
    assert _counted("integrations.needs_reauth") == 1
    with service_session() as s:
        install(s)  # the default rules (an earlier test's clean-up may have emptied the table)
    check_alerts(process_settings)
    with service_session() as s:
        fired = s.scalars(
            select(Alert.status)
            .join(AlertRule, AlertRule.id == Alert.rule_id)
            .where(AlertRule.name == "Connections need reconnecting")
        ).all()
    assert [status.value for status in fired] == ["firing"]

    reconnect(sandbox, integration, workspace, keys)

    eventually(
        ticking_until(
            celery_app,
            lambda: all(fresh(Post, p.id).status is PostStatus.PUBLISHED for p in posts),
        ),
        what="the waiting posts to go out after the reconnect",
    )
    assert len(_audit_events(integration)) == 1
    assert _counted("integrations.needs_reauth") == 1
    with service_session() as s:
        events = s.scalars(select(WebhookDelivery.event).order_by(WebhookDelivery.created_at))
        assert list(events) == ["integration.needs_reauth", "integration.reconnected"]


def test_refresh_expiring_uses_each_networks_margin_and_goes_past_a_bad_row(
    connect: ConnectFn,
    sandbox: SandboxClient,
    process_settings: Settings,
    celery_app: Celery,
    worker: Any,
) -> None:
    in_x_margin = connect("x")  # X: 30 min by default
    outside_default = connect("reddit")  # the default 15 min
    broken = connect("x")
    now = utcnow()
    set_integration(in_x_margin.id, token_expires_at=now + timedelta(minutes=20))
    set_integration(outside_default.id, token_expires_at=now + timedelta(minutes=20))
    set_integration(broken.id, token_expires_at=now + timedelta(minutes=1), provider="myspace")

    celery_app.send_task("herald.tokens.refresh_expiring")

    eventually(
        lambda: fresh(Integration, in_x_margin.id).token_version == in_x_margin.token_version + 1,
        what="the X token inside X's margin to be refreshed",
    )
    assert fresh(Integration, outside_default.id).token_version == outside_default.token_version
    assert len(token_calls(sandbox, "x")) == 1
    assert token_calls(sandbox, "reddit") == []
