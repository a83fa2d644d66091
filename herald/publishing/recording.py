"""Keep a network's answer until the database has it.

The answer to a publish call is the one thing Herald cannot ask for again: a post the network
created stays created, and Telegram or LinkedIn cannot be asked which. So an attempt's outcome
is written through :func:`record_durably`: an error that lost the database connection (an
``OperationalError`` or any disconnect) rolls the session back and writes again on a fresh
connection, with bounded backoff (``HERALD_PUBLISH_RECORD_ATTEMPTS`` tries). The publish is
never repeated, only the write; and the write is safe to repeat, because every move of a post
is a conditional UPDATE: a commit that landed before its reply was lost is not applied twice.

When the tries are spent, :class:`OutcomeNotRecorded` carries the answer out of the worker as
a :class:`~herald.contracts.NetworkAnswer`; the publish task hands it to
``herald.posts.record_outcome``, which records it when the database is back and never
publishes (docs/decisions.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy.orm import Session

from herald import db
from herald.contracts import NetworkAnswer, PublishedAnswer, RefusedAnswer
from herald.models import utcnow
from herald.providers.base import (
    ERROR_CLASSES,
    AmbiguousOutcome,
    ContentInvalid,
    ProviderError,
    PublishResult,
    RateLimited,
)
from herald.security.crypto import DecryptionError, UnknownKey

log = structlog.get_logger("herald.publishing")
T = TypeVar("T")
_BY_CODE: dict[str, type[ProviderError]] = {cls.code: cls for cls in ERROR_CLASSES}


@dataclass(frozen=True, slots=True)
class Answer:
    """What one publish call came back with: a result, or the error that ended it."""

    result: PublishResult | None
    error: ProviderError | DecryptionError | None
    finished_at: datetime
    latency_ms: int


class OutcomeNotRecorded(Exception):
    """The network answered, and the database would not take the outcome in time."""

    def __init__(self, answer: NetworkAnswer) -> None:
        what = (
            f"published as {answer.published.external_id} ({answer.published.url})"
            if answer.published
            else f"refused: {answer.refused.code if answer.refused else '?'}"
        )
        super().__init__(f"post {answer.post_id}: {what}; not recorded yet")
        self.answer = answer


def record_durably(session: Session, write: Callable[[], T], *, attempts: int) -> T:
    """:func:`herald.db.write_durably` for an attempt's outcome."""
    return db.write_durably(session, write, attempts=attempts, retry_event="publish.record_retry")


def carried(
    answer: Answer, *, post_id: uuid.UUID, attempt_id: uuid.UUID, task_id: str | None
) -> NetworkAnswer:
    """``answer`` as the payload of ``herald.posts.record_outcome``."""
    published = refused = None
    if answer.result is not None:
        r = answer.result
        published = PublishedAnswer(external_id=r.external_id, url=r.url, request_id=r.request_id)
    elif isinstance(answer.error, ProviderError):
        e = answer.error
        refused = RefusedAnswer(
            code=e.code,
            message=e.message[:2000],
            http_status=e.http_status,
            request_id=e.request_id[:200] if e.request_id else None,
            provider_code=e.provider_code[:200] if e.provider_code else None,
            reset_at=e.reset_at if isinstance(e, RateLimited) else None,
            rule=e.rule if isinstance(e, ContentInvalid) else None,
        )
    else:
        assert answer.error is not None  # an answer holds a result or an error
        refused = RefusedAnswer(code=answer.error.code, message=str(answer.error)[:2000])
    return NetworkAnswer(
        post_id=post_id,
        attempt_id=attempt_id,
        task_id=task_id,
        finished_at=answer.finished_at,
        latency_ms=answer.latency_ms,
        published=published,
        refused=refused,
    )


def restored(answer: NetworkAnswer, provider: str) -> Answer:
    """The :class:`Answer` a carried one stands for."""
    if answer.published is not None:
        p = answer.published
        result = PublishResult(p.external_id, p.url, p.request_id)
        return Answer(result, None, answer.finished_at, answer.latency_ms)
    assert answer.refused is not None
    return Answer(None, _error(answer.refused, provider), answer.finished_at, answer.latency_ms)


def _error(refused: RefusedAnswer, provider: str) -> ProviderError | DecryptionError:
    for unreadable in (UnknownKey, DecryptionError):
        if refused.code == unreadable.code:
            return unreadable(refused.message)
    # A code this version does not know is read the safe way: the outcome is open.
    cls = _BY_CODE.get(refused.code, AmbiguousOutcome)
    kw: dict[str, Any] = {
        "provider": provider,
        "http_status": refused.http_status,
        "request_id": refused.request_id,
        "provider_code": refused.provider_code,
    }
    if cls is RateLimited:
        return RateLimited(refused.message, reset_at=refused.reset_at or utcnow(), **kw)
    if cls is ContentInvalid:
        return ContentInvalid(refused.message, rule=refused.rule or "unknown", **kw)
    return cls(refused.message, **kw)
