"""Publish one post: claim it, call the network, record what happened (DESIGN.md §3).

The claim (``queued|retrying → publishing``) and the attempt row are committed before the
network is called, so a crash afterwards leaves evidence the sweep can act on. The outcome is
recorded after the call, whatever it was. Nothing here retries in a loop: a post that should
be tried again goes to ``retrying`` with ``next_attempt_at``, and the dispatcher picks it up
then — no ETA messages held by workers, nothing lost if the broker restarts.
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from opentelemetry import trace
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    PublishAttempt,
    attempts_since_reschedule,
    transition,
    utcnow,
)
from herald.providers.base import (
    AmbiguousOutcome,
    AuthExpired,
    Provider,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.registry import UnknownProvider, provider_for
from herald.publishing.reconcile import reconcile
from herald.publishing.scheduling import draft_of
from herald.security.credentials import account_of, open_tokens
from herald.security.crypto import DecryptionError, KeyRing
from herald.settings import Settings
from herald.telemetry import context, metrics

log = structlog.get_logger("herald.publishing")
WORKER = socket.gethostname()
_rng = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one publish run did. ``refresh`` asks the caller to refresh that integration and
    then publish the post again (the access token was refused)."""

    status: PostStatus | None
    kind: str
    refresh: uuid.UUID | None = None


NOT_MINE = Outcome(None, "not_claimed")
DUE_OR_QUEUED = (PostStatus.QUEUED, PostStatus.RETRYING)


def backoff(attempt: int, settings: Settings) -> timedelta:
    """Exponential backoff with jitter for the next try after ``attempt`` transient failures."""
    ceiling = min(settings.publish_backoff_max_s, settings.publish_backoff_s * 2 ** (attempt - 1))
    return timedelta(seconds=_rng.uniform(ceiling / 2, ceiling))


def publish_post(
    session: Session,
    post_id: uuid.UUID,
    settings: Settings,
    keys: KeyRing,
    *,
    task_id: str | None = None,
) -> Outcome:
    """Run one publish attempt of ``post_id``: preflight, claim, run. Commits as it goes."""
    row = session.execute(
        select(Post, Integration)
        .join(Integration, Integration.id == Post.integration_id)
        .where(Post.id == post_id)
    ).first()
    if row is None:
        log.warning("publish.unknown_post", post_id=str(post_id))
        return NOT_MINE
    post, integration = row[0], row[1]
    ready = preflight(session, post, integration, settings)
    if isinstance(ready, Outcome):
        return ready
    attempt = claim(session, post, integration, task_id=task_id)
    if attempt is None:
        log.info("publish.not_claimed", post_id=str(post_id))
        return NOT_MINE
    return _Run(session, post, integration, attempt, ready, settings, keys).call_and_record()


def preflight(
    session: Session, post: Post, integration: Integration, settings: Settings
) -> Provider | Outcome:
    """The adapter to publish with, or the outcome for a post that cannot be tried now
    (its integration needs the user, is paused by a rate limit, or has no adapter)."""
    if integration.status in (IntegrationStatus.NEEDS_REAUTH, IntegrationStatus.DISABLED):
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.FAILED,
            kind="integration_unavailable",
            last_error_code="integration_" + integration.status.value,
            last_error_message=f"the integration is {integration.status.value}; reconnect it",
        )
    if integration.rate_limited_until and integration.rate_limited_until > utcnow():
        # Paced: wait for the provider's reset without spending an attempt.
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.RETRYING,
            kind="paused",
            next_attempt_at=integration.rate_limited_until,
        )
    try:
        return provider_for(integration.provider, settings)
    except UnknownProvider:
        return _settle_unclaimed(
            session,
            post,
            to=PostStatus.FAILED,
            kind="provider_unsupported",
            last_error_code="provider_unsupported",
            last_error_message=f"no adapter for provider {integration.provider!r}",
        )


def _settle_unclaimed(
    session: Session, post: Post, *, to: PostStatus, kind: str, **values: object
) -> Outcome:
    sources = (PostStatus.QUEUED,) if to is PostStatus.RETRYING else DUE_OR_QUEUED
    won = transition(session, post.id, from_=sources, to=to, **values)
    session.commit()
    return Outcome(to, kind) if won else NOT_MINE


def claim(
    session: Session, post: Post, integration: Integration, *, task_id: str | None
) -> PublishAttempt | None:
    """Move the post to ``publishing`` and write its attempt row, durably, before any call to
    the network; None if another run claimed it first."""
    now = utcnow()
    attempt_number = post.attempts + 1
    if not transition(
        session,
        post.id,
        from_=DUE_OR_QUEUED,
        to=PostStatus.PUBLISHING,
        attempts=attempt_number,
        publishing_started_at=now,
        next_attempt_at=None,
    ):
        session.rollback()
        return None
    attempt = PublishAttempt(
        workspace_id=post.workspace_id,
        post_id=post.id,
        provider=integration.provider,
        attempt_number=attempt_number,
        started_at=now,
        correlation_id=context.correlation_id() or post.correlation_id,
        trace_id=_trace_id(),
        task_id=task_id,
        worker=WORKER,
    )
    session.add(attempt)
    session.commit()
    return attempt


@dataclass(slots=True)
class _Run:
    """One claimed attempt: make the call, then record its outcome on post and attempt."""

    session: Session
    post: Post
    integration: Integration
    attempt: PublishAttempt
    provider: Provider
    settings: Settings
    keys: KeyRing

    def call_and_record(self) -> Outcome:
        started = time.perf_counter()
        result: PublishResult | None = None
        error: ProviderError | DecryptionError | None = None
        try:
            draft = draft_of(self.post)
            account = account_of(self.integration)
            tokens = open_tokens(self.integration, self.keys)
            self.provider.validate(draft, account)
            result = self.provider.publish(draft, account, tokens)
        except (ProviderError, DecryptionError) as exc:
            error = exc
        latency = time.perf_counter() - started
        # Timing first: the outcome below then reaches the attempt row in a single UPDATE.
        self.attempt.finished_at = utcnow()
        self.attempt.latency_ms = round(latency * 1000)
        if result is not None:
            self.attempt.outcome = "published"
            self.attempt.provider_request_id = result.request_id
            outcome = self._published(result)
        elif isinstance(error, AmbiguousOutcome):
            outcome = self._ambiguous(error)
        elif isinstance(error, ProviderError):
            outcome = self._refused(error)
        else:
            self.attempt.outcome, self.attempt.error_code = "failed", "token_unreadable"
            self.attempt.error_message = str(error)
            outcome = self._fail("token_unreadable", str(error))
        self.session.commit()
        self._observe(outcome, latency)
        return outcome

    def _observe(self, outcome: Outcome, latency: float) -> None:
        labels = {"provider": self.integration.provider}
        metrics.publish_attempts.add(1, {**labels, "outcome": self.attempt.outcome or "unknown"})
        metrics.publish_latency.record(latency, labels)
        if self.attempt.error_code:
            metrics.publish_errors.add(1, {**labels, "code": self.attempt.error_code})
        if outcome.status is PostStatus.PUBLISHED:
            metrics.observe_published(self.integration.provider, self.post.scheduled_at, utcnow())
        log.info(
            "publish.attempt",
            post_id=str(self.post.id),
            provider=self.integration.provider,
            attempt=self.attempt.attempt_number,
            outcome=self.attempt.outcome,
            status=outcome.status.value if outcome.status else None,
            error_code=self.attempt.error_code,
            latency_ms=self.attempt.latency_ms,
        )

    # -- outcomes -------------------------------------------------------------------------------

    def _published(self, result: PublishResult) -> Outcome:
        transition(
            self.session,
            self.post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.PUBLISHED,
            external_id=result.external_id,
            external_url=result.url,
            published_at=utcnow(),
            last_error_code=None,
            last_error_message=None,
        )
        return Outcome(PostStatus.PUBLISHED, "published")

    def _ambiguous(self, error: AmbiguousOutcome) -> Outcome:
        self._note(error)
        verdict = reconcile(
            self.provider, self.post, self.integration, self.keys, since=self.attempt.started_at
        )
        if verdict.found is not None:
            self.attempt.outcome = "reconciled"
            return self._published(verdict.found)
        if verdict.safe_to_retry and not self._out_of_attempts():
            self.attempt.outcome = "ambiguous_retry"
            return self._retry_later(error)
        self.attempt.outcome = "needs_review"
        transition(
            self.session,
            self.post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.NEEDS_REVIEW,
            last_error_code=error.code,
            last_error_message=f"{error.message}; {verdict.reason}: check before retrying",
        )
        return Outcome(PostStatus.NEEDS_REVIEW, "needs_review")

    def _refused(self, error: ProviderError) -> Outcome:
        """Every answer that proves the post was not created, by class (DESIGN.md §3)."""
        self._note(error)
        if isinstance(error, RateLimited):
            return self._rate_limited(error)
        if isinstance(error, AuthExpired):
            return self._auth_expired(error)
        if isinstance(error, TransientError) and not self._out_of_attempts():
            self.attempt.outcome = "transient"
            return self._retry_later(error)
        if isinstance(error, ReauthRequired):
            self.integration.status = IntegrationStatus.NEEDS_REAUTH
        self.attempt.outcome = {
            ReauthRequired: "reauth_required",
            TransientError: "transient",
        }.get(type(error), "failed")
        return self._fail(error.code, error.message)

    def _rate_limited(self, error: RateLimited) -> Outcome:
        self.attempt.outcome = "rate_limited"
        _pause_integration(self.session, self.integration, error.reset_at)
        # Waiting for a reset is not a failure, but a post cannot wait for ever.
        if attempts_since_reschedule(self.post, self.attempt.attempt_number) >= (
            self.settings.publish_max_attempts * 2
        ):
            return self._fail(error.code, error.message)
        return self._retry_at(max(error.reset_at, utcnow()), error)

    def _auth_expired(self, error: AuthExpired) -> Outcome:
        self.attempt.outcome = "auth_expired"
        if self._out_of_attempts() or not self.provider.refreshes_tokens:
            self.integration.status = IntegrationStatus.NEEDS_REAUTH
            return self._fail(error.code, error.message)
        self.integration.status = IntegrationStatus.REFRESH_NEEDED
        # The refresh task publishes it again; the fallback time covers a lost refresh.
        retry = self._retry_later(error)
        return Outcome(retry.status, "auth_expired", refresh=self.integration.id)

    # -- helpers ----------------------------------------------------------------------------------

    def _out_of_attempts(self) -> bool:
        # The attempt row is authoritative: ``post.attempts`` was read before the claim.
        used = attempts_since_reschedule(self.post, self.attempt.attempt_number)
        return used >= self.settings.publish_max_attempts

    def _note(self, error: ProviderError) -> None:
        self.attempt.error_code = error.code
        self.attempt.error_message = error.message[:2000]
        self.attempt.http_status = error.http_status
        self.attempt.provider_request_id = error.request_id

    def _retry_later(self, error: ProviderError) -> Outcome:
        """Retry after the backoff for this attempt (exponential, with jitter)."""
        used = attempts_since_reschedule(self.post, self.attempt.attempt_number)
        return self._retry_at(utcnow() + backoff(used, self.settings), error)

    def _retry_at(self, when: datetime, error: ProviderError) -> Outcome:
        transition(
            self.session,
            self.post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.RETRYING,
            next_attempt_at=when,
            last_error_code=error.code,
            last_error_message=error.message[:2000],
        )
        return Outcome(PostStatus.RETRYING, error.code)

    def _fail(self, code: str, message: str) -> Outcome:
        transition(
            self.session,
            self.post.id,
            from_=PostStatus.PUBLISHING,
            to=PostStatus.FAILED,
            last_error_code=code,
            last_error_message=message[:2000],
        )
        return Outcome(PostStatus.FAILED, code)


def _pause_integration(session: Session, integration: Integration, until: datetime) -> None:
    """Pause every post of the integration until ``until`` (never shortening a pause)."""
    session.execute(
        update(Integration)
        .where(
            Integration.id == integration.id,
            (Integration.rate_limited_until.is_(None)) | (Integration.rate_limited_until < until),
        )
        .values(rate_limited_until=until)
        .execution_options(synchronize_session=False)
    )


def _trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def open_attempt(session: Session, post: Post) -> PublishAttempt | None:
    """The latest attempt of ``post`` that has no outcome yet (its worker died mid-call)."""
    return session.scalar(
        select(PublishAttempt)
        .where(PublishAttempt.post_id == post.id, PublishAttempt.finished_at.is_(None))
        .order_by(PublishAttempt.attempt_number.desc())
        .limit(1)
    )
