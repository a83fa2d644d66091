"""Maintenance tasks.

| task                         | queue | payload    |
| ---------------------------- | ----- | ---------- |
| ``herald.maintenance.purge`` | sweep | none (beat) |

``purge`` deletes history past ``HERALD_RETENTION_DAYS`` in bounded batches
(:mod:`herald.publishing.retention`); each run is recorded in ``job_runs`` like every beat job.
"""

from __future__ import annotations

from herald.celery_app import app
from herald.contracts import NoArguments
from herald.publishing.retention import purge_expired
from herald.settings import get_settings
from herald.tasks.base import HeraldTask


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.maintenance.purge",
    payload_model=NoArguments,
    periodic=True,
    scope="service",
)
def purge(self: HeraldTask, payload: NoArguments) -> dict[str, int]:
    return dict(purge_expired(self.session, get_settings()))
