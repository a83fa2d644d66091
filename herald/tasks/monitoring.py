"""Monitoring tasks: the heartbeat that proves each queue is consumed.

| task                           | queue         | payload                 |
| ------------------------------ | ------------- | ----------------------- |
| ``herald.monitoring.heartbeat`` | every queue   | :class:`HeartbeatPing`  |

Beat sends one heartbeat per queue each ``HERALD_HEARTBEAT_INTERVAL_S``, routed to that queue
explicitly (``herald/beat_schedule.py``). Whichever worker consumes it records the round trip —
beat's send time (the message's publication stamp) and its own start — in ``heartbeats``.
Health and the alert rules read the age of that row, so they never wait on a worker.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from herald.celery_app import app
from herald.models import utcnow
from herald.tasks.base import HeraldTask
from herald.telemetry import metrics, records


class HeartbeatPing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str = Field(min_length=1, max_length=200, description="The queue it was sent to")


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.monitoring.heartbeat",
    scope="service",
    payload_model=HeartbeatPing,
)
def heartbeat(self: HeraldTask, payload: HeartbeatPing) -> None:
    received_at = utcnow()
    sent = getattr(self.request, metrics.SENT_AT_HEADER, None)
    sent_at = datetime.fromtimestamp(float(sent), UTC) if sent is not None else received_at
    records.record_heartbeat(
        self.session,
        # Where it really arrived, which is what proves consumption; the payload says where
        # beat meant it to go (the same queue unless routing is misconfigured).
        queue=metrics.queue_of(self.request.delivery_info) or payload.queue,
        sent_at=sent_at,
        received_at=received_at,
        worker=self.request.hostname or "unknown",
    )
