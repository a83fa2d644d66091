"""Tasks used only by the monitoring tests: a periodic job that succeeds or fails on demand,
and the same work not declared periodic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from herald.celery_app import app
from herald.models import Workspace
from herald.tasks.base import HeraldTask


class JobOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail: bool = False


class JobBroke(Exception):
    pass


def _work(task: HeraldTask, order: JobOrder) -> None:
    # Writes in the task's transaction, which a failure rolls back.
    task.session.add(Workspace(name="written by a job", slug=f"job-{task.request.id}"))
    task.session.flush()
    if order.fail:
        raise JobBroke("the job broke; access_token=sekrit-value-123 must not be stored")


@app.task(
    bind=True,
    base=HeraldTask,
    name="tests.monitoring.job",
    payload_model=JobOrder,
    periodic=True,
    scope="service",  # writes a workspace: cross-tenant work, like beat's jobs
)
def periodic_job(self: HeraldTask, payload: JobOrder) -> None:
    _work(self, payload)


@app.task(
    bind=True,
    base=HeraldTask,
    name="tests.monitoring.not_a_job",
    payload_model=JobOrder,
    scope="service",
)
def plain_task(self: HeraldTask, payload: JobOrder) -> None:
    _work(self, payload)
