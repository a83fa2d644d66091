"""The delay from ``scheduled_at`` to publication is recorded wherever a post becomes
published: by the publisher, and by the sweep when it finds a dead worker's post at the
network."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from prometheus_client import generate_latest

from herald.models import Post, PostStatus, utcnow
from herald.publishing.publisher import publish_post
from herald.publishing.sweep import resolve_dead_workers
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.telemetry import metrics
from tests.fixtures.database import service_session
from tests.fixtures.monitoring import parse_exposition, total
from tests.fixtures.publishing import ConnectFn, fresh


def _delays(provider: str, le: str) -> float:
    samples = parse_exposition(generate_latest(metrics.REGISTRY).decode())
    return total(samples, "herald_publish_delay_seconds_bucket", provider=provider, le=le)


def test_publisher_and_sweep_both_record_the_publish_delay(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon")
    text = "Shipped, finally"
    # Published by the publisher, scheduled 90 s ago: falls in the 120 s bucket, not the 60 s.
    on_time = new_post(
        integration, content=text, status="queued", scheduled_at=utcnow() - timedelta(seconds=90)
    )
    before = (_delays("mastodon", "60.0"), _delays("mastodon", "120.0"))

    with service_session() as session:
        assert publish_post(session, on_time.id, pub_settings, keys).status is PostStatus.PUBLISHED
    assert (_delays("mastodon", "60.0"), _delays("mastodon", "120.0")) == (
        before[0],
        before[1] + 1,
    )

    # A worker died mid-call after the network took this one (same text, found by lookup);
    # it was due 100 minutes ago: in the 2 h bucket, not the 1 h one.
    stuck = new_post(
        integration,
        content=text,
        status="publishing",
        scheduled_at=utcnow() - timedelta(minutes=100),
        publishing_started_at=utcnow() - timedelta(hours=1),
    )
    before_sweep = (_delays("mastodon", "3600.0"), _delays("mastodon", "7200.0"))
    with service_session() as session:
        assert resolve_dead_workers(session, pub_settings, keys) == {"reconciled": 1}
    assert fresh(Post, stuck.id).status is PostStatus.PUBLISHED
    assert len(sandbox.posts("mastodon")) == 1
    assert (_delays("mastodon", "3600.0"), _delays("mastodon", "7200.0")) == (
        before_sweep[0],
        before_sweep[1] + 1,
    )
