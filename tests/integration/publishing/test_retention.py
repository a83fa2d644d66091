"""Retention: history past ``retention_days`` is purged in bounded batches; what is in flight,
recent or undelivered stays."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from herald.models import (
    Alert,
    AlertNotification,
    AlertRule,
    AlertStatus,
    NotificationStatus,
    OAuthState,
    Post,
    PostStatus,
    PublishAttempt,
    Severity,
    TokenRefreshAttempt,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from herald.models.webhook import DeliveryStatus
from herald.publishing.retention import purge_expired
from herald.settings import Settings, get_settings
from herald.telemetry import metrics
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_post, make_workspace


def test_history_past_retention_is_purged_in_batches_and_the_rest_stays(
    committed: Engine,
) -> None:
    old, recent = utcnow() - timedelta(days=100), utcnow() - timedelta(days=10)
    with service_session() as s:
        ws = make_workspace(s)
        integration = make_integration(s, ws)
        published = make_post(s, integration, status=PostStatus.PUBLISHED)
        in_review = make_post(s, integration, status=PostStatus.NEEDS_REVIEW)
        for n, (post, started) in enumerate(
            [
                (published, old),
                (published, old),
                (published, old),
                (published, recent),
                (in_review, old),
            ],
            start=1,
        ):
            s.add(_attempt(post, n, started))
        for finished in (old, None):
            s.add(
                TokenRefreshAttempt(
                    workspace_id=ws.id,
                    integration_id=integration.id,
                    provider="mastodon",
                    started_at=old,
                    finished_at=finished,
                    token_version_before=1,
                )
            )
        rule = AlertRule(
            name="r",
            metric="publish.failure_rate",
            comparison=">",
            threshold=0.2,
            severity=Severity.WARNING,
        )
        s.add(rule)
        s.flush()
        alert = Alert(
            rule_id=rule.id,
            fingerprint=uuid.uuid4().hex,
            status=AlertStatus.RESOLVED,
            severity=Severity.WARNING,
        )
        s.add(alert)
        s.flush()
        for n, status in enumerate((NotificationStatus.SENT, NotificationStatus.PENDING)):
            s.add(
                AlertNotification(
                    alert_id=alert.id,
                    receiver="ops",
                    transition=f"{n}:firing",
                    status=status,
                    next_attempt_at=old,
                )
            )
        subscription = WebhookSubscription(
            workspace_id=ws.id,
            url="https://receiver.example/hook",
            events=["post.published"],
            secret_ciphertext="sealed",
        )
        s.add(subscription)
        s.flush()
        for status, last in (
            (DeliveryStatus.SENT, old),
            (DeliveryStatus.FAILED, old),
            (DeliveryStatus.PENDING, old),  # still to deliver: kept however old
            (DeliveryStatus.SENT, recent),
        ):
            s.add(
                WebhookDelivery(
                    workspace_id=ws.id,
                    subscription_id=subscription.id,
                    event="post.published",
                    payload={},
                    status=status,
                    next_attempt_at=last,
                )
            )
        for expires in (old, utcnow() + timedelta(minutes=10)):
            s.add(
                OAuthState(
                    state_hash=uuid.uuid4().hex,
                    workspace_id=ws.id,
                    user_id="u",
                    provider="x",
                    redirect_uri="https://app.example/callback",
                    expires_at=expires,
                )
            )
    settings = get_settings().model_copy(
        update={"retention_days": 30, "retention_batch_size": 2, "retention_max_batches": 5}
    )
    counted = _purged_count()
    with service_session() as s:
        purged = purge_expired(s, settings)
    assert purged == {
        "publish_attempts": 3,
        "token_refresh_attempts": 2,  # the one left open 100 days ago too: its worker died
        "alert_notifications": 1,
        "webhook_deliveries": 2,
        "oauth_states": 1,
    }
    assert _purged_count() == counted + 3
    with service_session() as s:
        kept = s.execute(select(PublishAttempt.post_id, PublishAttempt.started_at)).all()
        assert sorted(post_id == in_review.id for post_id, _ in kept) == [False, True]
        assert s.scalar(select(func.count()).select_from(TokenRefreshAttempt)) == 0
        assert sorted(s.scalars(select(WebhookDelivery.status))) == sorted(
            [DeliveryStatus.PENDING, DeliveryStatus.SENT]
        )
        assert s.scalar(select(func.count()).select_from(OAuthState)) == 1
        (pending,) = s.scalars(select(AlertNotification.status))
        assert pending is NotificationStatus.PENDING


def _attempt(post: Post, number: int, started: datetime) -> PublishAttempt:
    return PublishAttempt(
        workspace_id=post.workspace_id,
        post_id=post.id,
        provider="mastodon",
        attempt_number=number,
        started_at=started,
    )


def _purged_count() -> float:
    sample = metrics.REGISTRY.get_sample_value(
        "herald_retention_purged_total", {"table": "publish_attempts"}
    )
    return sample or 0.0


def test_a_run_stops_after_its_batches_and_the_next_goes_on(committed: Engine) -> None:
    with service_session() as s:
        ws = make_workspace(s)
        post = make_post(s, make_integration(s, ws), status=PostStatus.FAILED)
        for n in range(1, 6):
            s.add(_attempt(post, n, utcnow() - timedelta(days=400)))
    settings: Settings = get_settings().model_copy(
        update={"retention_batch_size": 2, "retention_max_batches": 1}
    )
    with service_session() as s:
        assert purge_expired(s, settings)["publish_attempts"] == 2
    with service_session() as s:
        assert purge_expired(s, settings)["publish_attempts"] == 2
