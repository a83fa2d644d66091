"""Tasks used only by the tests: a three-hop flow and a task with a strict payload."""

from __future__ import annotations

import time
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from herald.celery_app import app
from herald.tasks.base import HeraldTask, RetryPolicy
from herald.telemetry import context

log = structlog.get_logger("tests.flow")

# What each hop saw, appended by the worker thread, read by the test.
seen: list[dict[str, Any]] = []


class Flaky(Exception):
    """Fails hop B's first run."""


def _record(task: HeraldTask, hop: str) -> None:
    ctx = context.current()
    seen.append(
        {
            "hop": hop,
            "task_id": task.request.id,
            "retries": task.request.retries,
            "correlation_id": ctx.correlation_id,
            "causation_id": ctx.causation_id,
        }
    )


@app.task(bind=True, base=HeraldTask, name="tests.flow.a")
def hop_a(self: HeraldTask) -> None:
    _record(self, "a")
    log.info("flow.a.enqueueing_b")
    hop_b.apply_async(link=hop_c.s())


@app.task(
    bind=True,
    base=HeraldTask,
    name="tests.flow.b",
    retry_policy=RetryPolicy(retry_on=(Flaky,), max_retries=3, backoff_s=0.05, jitter=False),
)
def hop_b(self: HeraldTask) -> str:
    _record(self, "b")
    if self.request.retries == 0:
        log.warning("flow.b.failing_once")
        raise Flaky("first run fails on purpose")
    log.info("flow.b.succeeded")
    return "from-b"


@app.task(bind=True, base=HeraldTask, name="tests.flow.c")
def hop_c(self: HeraldTask, value: str) -> None:
    _record(self, "c")
    log.info("flow.c.received", value=value)


class StrictPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0)
    label: str = Field(min_length=1, max_length=50)


strict_runs: list[StrictPayload] = []


@app.task(bind=True, base=HeraldTask, name="tests.strict", payload_model=StrictPayload)
def strict_task(self: HeraldTask, payload: StrictPayload) -> None:
    strict_runs.append(payload)


# -- the task base: after-commit sends and the retry policy ------------------------------------

markers: list[str] = []


@app.task(bind=True, base=HeraldTask, name="tests.marker")
def marker_task(self: HeraldTask, marker: str) -> None:
    markers.append(marker)


@app.task(bind=True, base=HeraldTask, name="tests.enqueue_then")
def enqueue_then(self: HeraldTask, marker: str, fail: bool) -> None:
    """Enqueue ``tests.marker`` after commit, then fail (the transaction rolls back) or not."""
    self.enqueue(app.signature("tests.marker", kwargs={"marker": marker}))
    if fail:
        raise RuntimeError("the body failed: its transaction rolls back")


class AlwaysFlaky(Exception):
    """Raised by every run of ``tests.always_flaky``."""


FLAKY_POLICY = RetryPolicy(
    retry_on=(AlwaysFlaky,), max_retries=2, backoff_s=0.4, backoff_max_s=0.6, jitter=True
)
flaky_runs: list[dict[str, Any]] = []


@app.task(bind=True, base=HeraldTask, name="tests.always_flaky", retry_policy=FLAKY_POLICY)
def always_flaky(self: HeraldTask) -> None:
    flaky_runs.append({"retries": self.request.retries, "at": time.time(), "eta": self.request.eta})
    raise AlwaysFlaky(f"run {self.request.retries} fails")
