"""Scheduling and dispatch rules: idempotency, refusals that create nothing, pacing caps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from herald.models import DeadLetter, Post, PostStatus, utcnow
from herald.publishing.dispatch import claim_due_posts
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_integration, make_workspace
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn


def count_posts() -> int:
    with service_session() as s:
        return s.scalar(select(func.count()).select_from(Post)) or 0


def posts_with_key(key: str) -> int:
    with service_session() as s:
        return s.scalar(select(func.count()).where(Post.idempotency_key == key)) or 0


def test_per_provider_cap_limits_posts_in_flight(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    x, mastodon = connect("x"), connect("mastodon")
    for _ in range(5):
        new_post(x)
        new_post(mastodon)
    capped = pub_settings.model_copy(update={"provider_concurrency": {"x": 2}})
    with service_session() as s:
        first = claim_due_posts(s, capped)
    with service_session() as s:
        second = claim_due_posts(s, capped)  # x is at its cap until those two finish
    with service_session() as s:
        queued_x = s.scalar(
            select(func.count())
            .select_from(Post)
            .where(Post.integration_id == x.id, Post.status == PostStatus.QUEUED)
        )
        queued_mastodon = s.scalar(
            select(func.count())
            .select_from(Post)
            .where(Post.integration_id == mastodon.id, Post.status == PostStatus.QUEUED)
        )
    assert len(first) == 7
    assert second == []
    assert (queued_x, queued_mastodon) == (2, 5)


def dead_letters() -> list[DeadLetter]:
    with service_session() as s:
        return list(s.scalars(select(DeadLetter)))


def wait_for_dead_letters() -> list[DeadLetter]:
    letters: list[DeadLetter] = eventually(dead_letters, what="a dead letter")
    return letters


def _schedule_payload(integration: Any, **overrides: Any) -> dict[str, Any]:
    payload = {
        "workspace_id": str(integration.workspace_id),
        "integration_id": str(integration.id),
        "content": "hello",
        "scheduled_at": (utcnow() + timedelta(minutes=5)).isoformat(),
        "idempotency_key": "k-1",
    }
    payload.update(overrides)
    return payload


def test_the_same_idempotency_key_twice_creates_one_post(
    process_settings: Settings, worker: Any, connect: ConnectFn, celery_app: Any
) -> None:
    integration = connect("mastodon")
    for _ in range(2):
        celery_app.send_task("herald.posts.schedule", kwargs=_schedule_payload(integration))
    # A third message behind them on the same queue, with a key of its own: the one worker
    # takes messages in order, so once its post exists both earlier messages have run.
    marker = _schedule_payload(integration, idempotency_key="k-marker")
    celery_app.send_task("herald.posts.schedule", kwargs=marker)
    eventually(lambda: posts_with_key("k-marker"), what="the marker message to run")
    assert posts_with_key("k-1") == 1
    assert count_posts() == 2


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"content": 42}, "content: Input should be a valid string"),
        ({"integration_id": "not-a-uuid"}, "integration_id"),
        ({"scheduled_at": "2026-13-45"}, "scheduled_at"),
        ({"scheduled_at": "2026-12-01T09:00:00"}, "scheduled_at: must be an RFC 3339 date-time"),
        ({"scheduled_at": 1_790_000_000.5}, "scheduled_at: must be an RFC 3339 date-time"),
        ({"scheduled_at": "0001-01-01T00:00:00+14:00"}, "scheduled_at: is out of range"),
        ({"content": "hello\x00world"}, "content: must not contain NUL"),
        ({"provider_settings": {"t": "lone \ud800"}}, "provider_settings: text must not contain"),
        ({"provider_settings": {"ti\x00tle": "x"}}, "provider_settings: names must be text"),
        ({"provider_settings": {"t": ["x\x00"]}}, "provider_settings: text must not contain NUL"),
        ({"provider_settings": {"n": float("nan")}}, "provider_settings: numbers must be finite"),
        ({"sneaky": "field"}, "sneaky: Extra inputs are not permitted"),
        ({"idempotency_key": "has spaces; DROP TABLE"}, "idempotency_key"),
        ({"content": "x" * 100_001}, "content"),
        ({"integration_id": "00000000-0000-4000-8000-000000000000"}, "integration_not_found"),
        ({"scheduled_at": "2000-01-01T00:00:00Z"}, "scheduled_at_out_of_range"),
        ({"scheduled_at": "2999-01-01T00:00:00Z"}, "scheduled_at_out_of_range"),
        ({"content": "é" * 501}, "content_invalid"),
    ],
)
def test_bad_schedule_payloads_are_refused_recorded_and_create_nothing(
    process_settings: Settings,
    worker: Any,
    connect: ConnectFn,
    celery_app: Any,
    log_lines: list[dict[str, Any]],
    overrides: dict[str, Any],
    reason: str,
) -> None:
    integration = connect("mastodon")
    bad = celery_app.send_task(
        "herald.posts.schedule", kwargs=_schedule_payload(integration, **overrides)
    )
    letters = wait_for_dead_letters()
    assert [(d.task_name, d.task_id) for d in letters] == [("herald.posts.schedule", bad.id)]
    assert reason in letters[0].reason
    assert count_posts() == 0
    assert not [line for line in log_lines if line.get("event") == "task.retrying"]


def test_a_payload_holding_nul_is_dead_lettered_with_what_could_be_kept(
    process_settings: Settings, worker: Any, connect: ConnectFn, celery_app: Any
) -> None:
    integration = connect("mastodon")
    payload = _schedule_payload(
        integration, content="a\x00b", provider_settings={"k\x00": ["v\x00", float("inf")]}
    )

    celery_app.send_task("herald.posts.schedule", kwargs=payload)

    [letter] = wait_for_dead_letters()
    # NUL is kept visible as an escape (dead_letters.py), never stored raw.
    assert letter.payload["content"] == "a\\x00b"
    assert letter.payload["provider_settings"] == {"k\\x00": ["v\\x00", "inf"]}
    assert letter.payload["idempotency_key"] == payload["idempotency_key"]
    assert count_posts() == 0


def test_another_workspaces_integration_is_refused_like_a_missing_one(
    process_settings: Settings, worker: Any, connect: ConnectFn, celery_app: Any
) -> None:
    mine = connect("mastodon")
    with service_session() as s:
        other_ws = make_workspace(s)
        theirs = make_integration(s, other_ws, provider="mastodon")
    payload = _schedule_payload(mine, integration_id=str(theirs.id))
    celery_app.send_task("herald.posts.schedule", kwargs=payload)
    letters = wait_for_dead_letters()
    assert "integration_not_found" in letters[0].reason
    assert count_posts() == 0


def test_dispatch_applies_backpressure_while_workers_are_behind(
    connect: ConnectFn, new_post: Callable[..., Post], pub_settings: Settings
) -> None:
    integration = connect("mastodon")
    for _ in range(6):
        new_post(integration)
    settings = pub_settings.model_copy(update={"dispatch_max_queued": 4})
    with service_session() as s:
        assert len(claim_due_posts(s, settings)) == 4
    with service_session() as s:
        assert claim_due_posts(s, settings) == []  # four still wait for a worker
    with service_session() as s:
        s.execute(
            Post.__table__.update()
            .where(Post.status == PostStatus.QUEUED)
            .values(status=PostStatus.PUBLISHED.value)
        )
    with service_session() as s:
        assert len(claim_due_posts(s, settings)) == 2
