"""Publishing tasks: thin Celery bindings of :mod:`herald.publishing`.

| task                        | queue   | payload                         |
| --------------------------- | ------- | ------------------------------- |
| ``herald.posts.schedule``   | default | :class:`SchedulePost`           |
| ``herald.posts.dispatch_due`` | default | none (beat)                   |
| ``herald.posts.publish``    | publish | :class:`PublishPost`            |
| ``herald.posts.sweep_stuck`` | default | none (beat)                    |
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.canvas import Signature
from sqlalchemy.exc import OperationalError

from herald.celery_app import app
from herald.contracts import NoArguments, PublishPost, SchedulePost
from herald.publishing.dispatch import Claimed, claim_due_posts
from herald.publishing.publisher import publish_post
from herald.publishing.scheduling import SchedulingError, schedule_post
from herald.publishing.sweep import requeue_lost, resolve_dead_workers
from herald.security.crypto import KeyRing
from herald.settings import get_settings
from herald.tasks.base import HeraldTask, RetryPolicy
from herald.telemetry import context

log = structlog.get_logger("herald.tasks")

# A database that is briefly away is worth waiting for; everything else is decided in the
# body and recorded on the post.
DB_BLIPS = RetryPolicy(retry_on=(OperationalError,), max_retries=5, backoff_s=1.0)


def _keys() -> KeyRing:
    return KeyRing.from_settings(get_settings())


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.schedule",
    payload_model=SchedulePost,
    retry_policy=DB_BLIPS,
)
def schedule(self: HeraldTask, payload: SchedulePost) -> dict[str, Any]:
    try:
        post, created = schedule_post(
            self.session, payload, get_settings(), correlation_id=context.correlation_id()
        )
    except SchedulingError as exc:
        # The payload was well-formed but cannot be honoured: refuse it like a bad payload.
        self._reject(f"{exc.code}: {exc.message}", payload.model_dump(mode="json"))
    return {"post_id": str(post.id), "created": created}


def publish_signature(post: Claimed) -> Signature[Any]:
    """``publish`` for one claimed post, continuing the correlation the post was scheduled
    under (the request or the other service that created it), not the beat tick's."""
    headers = {context.WORKSPACE_HEADER: str(post.workspace_id)}
    if post.correlation_id:
        headers[context.CORRELATION_HEADER] = post.correlation_id
    return publish.signature(kwargs={"post_id": str(post.post_id)}, headers=headers)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.dispatch_due",
    payload_model=NoArguments,
    periodic=True,
)
def dispatch_due(self: HeraldTask, payload: NoArguments) -> int:
    claimed = claim_due_posts(self.session, get_settings())
    for post in claimed:
        self.enqueue(publish_signature(post))
    if claimed:
        log.info("dispatch.claimed", count=len(claimed))
    return len(claimed)


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.publish",
    payload_model=PublishPost,
    retry_policy=DB_BLIPS,
)
def publish(self: HeraldTask, payload: PublishPost) -> str | None:
    outcome = publish_post(
        self.session, payload.post_id, get_settings(), _keys(), task_id=self.request.id
    )
    if outcome.refresh is not None:
        self.enqueue(
            app.signature(
                "herald.tokens.refresh",
                kwargs={
                    "integration_id": str(outcome.refresh),
                    "then_publish": str(payload.post_id),
                },
            )
        )
    return outcome.status.value if outcome.status else None


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.posts.sweep_stuck",
    payload_model=NoArguments,
    periodic=True,
)
def sweep_stuck(self: HeraldTask, payload: NoArguments) -> dict[str, int]:
    settings = get_settings()
    requeued = requeue_lost(self.session, settings)
    for post in requeued:
        self.enqueue(publish_signature(post))
    self.session.commit()
    resolved = resolve_dead_workers(self.session, settings, _keys())
    return {"requeued": len(requeued), **resolved}
