"""Remote control of a running worker (what Flower's worker page and ``celery control`` send):
time limits that would break Herald's timing relations are refused, the others applied."""

from __future__ import annotations

from typing import Any

from celery import Celery

from herald.settings import Settings
from tests.fixtures.processes import StartWorker

PUBLISH = "herald.posts.publish"


def _time_limit(app: Celery, **limits: Any) -> dict[str, Any]:
    replies = app.control.time_limit(PUBLISH, reply=True, limit=1, timeout=10, **limits)
    assert len(replies) == 1, f"the worker should answer: {replies!r}"
    ((_, answer),) = replies[0].items()
    return answer  # type: ignore[no-any-return]


def test_time_limits_that_break_a_timing_relation_are_refused_and_safe_ones_applied(
    pub_settings: Settings, start_worker_process: StartWorker, celery_app: Celery
) -> None:
    worker = start_worker_process(pub_settings, name="controlled", queues="publish")
    hard, soft = pub_settings.task_time_limit_s, pub_settings.task_soft_time_limit_s

    # A hard limit past HERALD_PUBLISHING_TIMEOUT_S: the sweep would reconcile a live publish.
    longer = _time_limit(celery_app, soft=soft, hard=pub_settings.publishing_timeout_s)
    assert "HERALD_PUBLISHING_TIMEOUT_S" in longer["error"]
    # A soft limit shorter than one provider call: every slow answer would strand its post.
    one_call = pub_settings.provider_connect_timeout_s + pub_settings.provider_timeout_s
    shorter = _time_limit(celery_app, soft=one_call / 2, hard=hard)
    assert "HERALD_PROVIDER_TIMEOUT_S" in shorter["error"]
    for nonsense in ("ten", -5, float("inf")):
        assert "must be seconds" in _time_limit(celery_app, soft=nonsense, hard=hard)["error"]

    # Tighter limits that keep every relation are Celery's to apply.
    tighter = _time_limit(celery_app, soft=soft - 1, hard=hard - 1)
    assert tighter == {"ok": "time limits set successfully"}
    log = worker.log.read_text()
    assert log.count("control.time_limit_refused") == 2
