"""The consumer refuses a message due more than MAX_ETA_AHEAD_S ahead; none of Herald's own
delayed messages may come near it (a retry's backoff, the dispatcher's lookahead)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald.broker.limits import MAX_ETA_AHEAD_S
from herald.celery_app import app
from herald.publishing.dispatch import lookahead_s
from herald.settings import Settings
from herald.tasks.base import HeraldTask


def test_no_herald_task_retries_further_ahead_than_the_consumer_accepts() -> None:
    app.loader.import_default_modules()
    policies = {
        name: task.retry_policy
        for name, task in app.tasks.items()
        if isinstance(task, HeraldTask) and task.retry_policy.retry_on
    }
    assert policies  # the publish, recording, token and webhook tasks at least
    too_far = {n: p.backoff_max_s for n, p in policies.items() if p.backoff_max_s > MAX_ETA_AHEAD_S}
    assert too_far == {}


def test_the_dispatch_lookahead_cannot_reach_past_it() -> None:
    Settings(env="development", dispatch_lookahead_s=MAX_ETA_AHEAD_S)
    with pytest.raises(ValidationError, match="dispatch_lookahead_s"):
        Settings(env="development", dispatch_lookahead_s=MAX_ETA_AHEAD_S + 1)
    longest_tick = Settings(env="development", dispatch_interval_s=600)
    assert lookahead_s(longest_tick) <= MAX_ETA_AHEAD_S
    with pytest.raises(ValidationError, match="dispatch_interval_s"):
        Settings(env="development", dispatch_interval_s=601)
