"""Tasks used only by the tests: a three-hop flow and a task with a strict payload."""

from __future__ import annotations

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
