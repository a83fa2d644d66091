"""Publish one post: claim it, call the network, record what happened (DESIGN.md §3).

The claim (``queued|retrying → publishing``) and the attempt row are committed before the
network is called (:mod:`.claiming`), so a crash afterwards leaves evidence the sweep can act
on. The outcome is
recorded after the call, whatever it was, and the network's answer is kept until it is: a
database blip is retried on the write, never on the publish (:mod:`.recording`). Nothing
here retries a publish in a loop: a post that should be tried again goes to ``retrying`` with
``next_attempt_at``, and the dispatcher picks it up then — no ETA messages held by workers,
nothing lost if the broker restarts.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from herald import db, reauth
from herald.contracts import NetworkAnswer
from herald.media import Fetcher, prepare
from herald.media.ledger import DatabaseLedger
from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    PublishAttempt,
    attempts_since_reschedule,
    request_refresh,
    utcnow,
)
from herald.providers.base import (
    AmbiguousOutcome,
    AuthExpired,
    ClaimLapsed,
    ClaimLapsedMidCall,
    Provider,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.fence import ClaimExpired, lease
from herald.providers.registry import provider_for
from herald.publishing import circuit, fastpath
from herald.publishing.claiming import (
    NOT_MINE,
    Outcome,
    claim,
    claim_if_ready,
    preflight,
)
from herald.publishing.reconcile import Verdict, reconcile
from herald.publishing.recording import (
    Answer,
    OutcomeNotRecorded,
    carried,
    record_durably,
    restored,
)
from herald.publishing.scheduling import draft_of
from herald.publishing.transitions import move
from herald.security.credentials import account_of, open_tokens
from herald.security.crypto import DecryptionError, KeyRing, UnknownKey
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.publishing")
_rng = random.Random()  # noqa: S311 - jitter, not cryptography
# The run recorded its attempt but lost the post's move to something else (logged, counted).
LOST = Outcome(None, "lost_transition")
Sources = PostStatus | tuple[PostStatus, ...]
#: Where the network's yes settles a post from: ``publishing``, or ``needs_review`` when the
#: sweep gave the post of a run paused past the publishing timeout to review before the run
#: woke with the answer (still this attempt's: the move names its attempt number).
SETTLED_BY_A_YES = (PostStatus.PUBLISHING, PostStatus.NEEDS_REVIEW)


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
    """Run one publish attempt of ``post_id``: preflight, claim, run. Commits as it goes.

    The common case (due, nothing in the way) is claimed in one statement (:mod:`.fastpath`);
    any other post is read and judged by the preflight first."""
    claimed = claim_if_ready(session, post_id, settings, task_id=task_id)
    if claimed is not None:
        adapter = provider_for(claimed.integration.provider, settings)
        run = _Run(
            session, claimed.post, claimed.integration, claimed.attempt, adapter, settings, keys
        )
        run.ready = claimed
        return run.call_and_record()
    row = session.execute(
        select(Post, Integration)
        .join(Integration, Integration.id == Post.integration_id)
        .where(Post.id == post_id)
    ).first()
    if row is None:
        log.warning("publish.unknown_post", post_id=str(post_id))
        return NOT_MINE
    post, integration = row[0], row[1]
    early = _not_yet(session, post)
    if early is not None:
        return early
    ready = preflight(session, post, integration, settings)
    if isinstance(ready, Outcome):
        return ready
    attempt = claim(session, post, integration, task_id=task_id)
    if attempt is None:
        log.info("publish.not_claimed", post_id=str(post_id))
        return NOT_MINE
    return _Run(session, post, integration, attempt, ready, settings, keys).call_and_record()


def _not_yet(session: Session, post: Post) -> Outcome | None:
    """What a run does with a post it must not claim yet, or None to go on."""
    now = utcnow()
    if post.status is PostStatus.QUEUED and post.scheduled_at > now:
        # Claimed ahead of time and delivered early (a clock apart, a countdown cut short):
        # never published before it is due; the caller sends it again for then.
        session.rollback()
        return Outcome(None, "not_due", not_before=post.scheduled_at)
    if post.status is PostStatus.RETRYING and not (
        post.next_attempt_at is not None and post.next_attempt_at <= now
    ):
        # In its backoff, or waiting for its user: a stray message (the dispatcher hands the
        # post over when its next attempt is due). Nothing spent, nothing sent again.
        session.rollback()
        log.info("publish.not_claimed", post_id=str(post.id), reason="next attempt not due")
        return NOT_MINE
    return None


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
    #: The token version of the tokens this attempt sent (what a refusal is about).
    token_version: int = 0
    #: Set when the claim was :func:`fastpath.claim_ready`'s: the session is in autocommit.
    ready: fastpath.Ready | None = None

    def call_and_record(self) -> Outcome:
        """Publish, then record the answer (which outlives a database blip)."""
        return self.record(self._call())

    def _call(self) -> Answer:
        started = time.perf_counter()
        result: PublishResult | None = None
        error: ProviderError | DecryptionError | None = None
        try:
            draft = draft_of(self.post)
            account = account_of(self.integration)
            self.token_version = self.integration.token_version
            tokens = open_tokens(self.integration, self.keys)
            self.provider.validate(draft, account)
            # The fetcher holds the files it fetched until the upload is done.
            with lease(self.attempt.started_at, self.settings), Fetcher(self.settings) as fetcher:
                draft = prepare(draft, self.provider, account, fetcher, self._ledger())
                result = self.provider.publish(draft, account, tokens)
        except (ProviderError, DecryptionError) as exc:
            error = exc
        except ClaimExpired as exc:
            log.warning(
                "publish.claim_expired",
                post_id=str(self.post.id),
                attempt=self.attempt.attempt_number,
                late_s=round(exc.late_s, 1),
                after_writes=exc.after_writes,
            )
            lapsed = ClaimLapsedMidCall if exc.after_writes else ClaimLapsed
            error = lapsed(str(exc), provider=self.integration.provider)
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Answer(result, error, utcnow(), latency_ms)

    def _ledger(self) -> DatabaseLedger:
        return DatabaseLedger(workspace_id=self.post.workspace_id, post_id=self.post.id)

    def record(self, answer: Answer, *, from_: PostStatus | None = None) -> Outcome:
        """Write ``answer`` on the post and its attempt, reconciling an ambiguous one first.
        The write is retried on a fresh connection while the database is away, the publish
        never; past the retries the answer leaves in :class:`OutcomeNotRecorded`. ``from_``
        (a published answer only) is the status the post left ``publishing`` for meanwhile."""
        verdict = None
        if isinstance(answer.error, AmbiguousOutcome):
            verdict = reconcile(
                self.provider, self.post, self.integration, self.keys, since=self.attempt.started_at
            )
        # Read before a rollback can expire them: the answer must be able to leave without
        # the database.
        post_id, attempt_id, task_id = self.post.id, self.attempt.id, self.attempt.task_id
        if self.ready is not None:
            at_once = self._record_at_once(answer)
            if at_once is not None:
                self._observe(at_once, answer.latency_ms / 1000)
                return at_once
        try:
            outcome = record_durably(
                self.session,
                lambda: self._write(answer, verdict, from_ or SETTLED_BY_A_YES),
                attempts=self.settings.publish_record_attempts,
            )
        except Exception as exc:
            if not db.lost_connection(exc):
                raise
            carry = carried(answer, post_id=post_id, attempt_id=attempt_id, task_id=task_id)
            raise OutcomeNotRecorded(carry) from exc
        self._observe(outcome, answer.latency_ms / 1000)
        return outcome

    def _record_at_once(self, answer: Answer) -> Outcome | None:
        """After a one-statement claim, a published answer is recorded in one statement too
        (:func:`fastpath.record_published`). For any other answer, or if that statement lost
        the database, None: the session leaves autocommit and :meth:`_write` records it."""
        ready, self.ready = self.ready, None
        assert ready is not None
        result = answer.result
        if result is not None:
            try:
                recorded = fastpath.record_published(
                    self.session,
                    ready,
                    result,
                    finished_at=answer.finished_at,
                    latency_ms=answer.latency_ms,
                )
            except Exception as exc:
                if not db.lost_connection(exc):
                    raise
                log.warning("publish.record_retry", attempt=1, error=type(exc).__name__)
            else:
                if recorded.won:
                    return self._published_at_once(recorded, answer, result)
                # The post left publishing meanwhile (the sweep gave a paused run's post to
                # review): the general path settles it from there, or counts the loss.
        db.roll_back(self.session)  # ends the autocommit transaction
        return None

    def _published_at_once(
        self, recorded: fastpath.Recorded, answer: Answer, result: PublishResult
    ) -> Outcome:
        attempt = self.attempt
        attempt.finished_at, attempt.latency_ms = answer.finished_at, answer.latency_ms
        attempt.outcome, attempt.provider_request_id = "published", result.request_id
        if not recorded.circuit_closed:
            # A half-open circuit closes on this answer: in a transaction of its own.
            self.session.commit()
            circuit.observe(self.session, self.integration.provider, True, self.settings, utcnow())
            self.session.commit()
        return Outcome(PostStatus.PUBLISHED, "published")

    def _write(self, answer: Answer, verdict: Verdict | None, from_: Sources) -> Outcome:
        if self.attempt not in self.session:  # claimed by the fast path: detached until now
            self.session.add(self.attempt)
        # Timing first: the outcome below then reaches the attempt row in a single UPDATE.
        self.attempt.finished_at = answer.finished_at
        self.attempt.latency_ms = answer.latency_ms
        result, error = answer.result, answer.error
        if result is not None:
            self.attempt.outcome = "published"
            self.attempt.provider_request_id = result.request_id
            self.attempt.error_code = self.attempt.error_message = None
            outcome = self._published(result, from_)
        elif isinstance(error, AmbiguousOutcome):
            assert verdict is not None
            outcome = self._ambiguous(error, verdict)
        elif isinstance(error, ProviderError):
            outcome = self._refused(error)
        else:
            assert error is not None  # an answer holds a result or an error
            # This process's key ring being behind (UnknownKey) is not the token broken: another
            # try (here after a restart, or on a process that has the key) can open it.
            retry = isinstance(error, UnknownKey) and not self._out_of_attempts()
            self.attempt.outcome = "transient" if retry else "failed"
            self.attempt.error_code, self.attempt.error_message = error.code, str(error)
            if retry:
                outcome = self._retry_later(error.code, str(error))
            else:
                outcome = self._fail(error.code, str(error))
        health = circuit.network_health(None if result is not None else error)
        circuit.observe(self.session, self.integration.provider, health, self.settings, utcnow())
        self.session.commit()
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

    def _published(self, result: PublishResult, from_: Sources = PostStatus.PUBLISHING) -> Outcome:
        return self._settle(
            PostStatus.PUBLISHED,
            "published",
            from_=from_,
            external_id=result.external_id,
            external_url=result.url,
            published_at=utcnow(),
            last_error_code=None,
            last_error_message=None,
        )

    def _ambiguous(self, error: AmbiguousOutcome, verdict: Verdict) -> Outcome:
        self._note(error)
        if verdict.found is not None:
            self.attempt.outcome = "reconciled"
            return self._published(verdict.found)
        if verdict.safe_to_retry and not self._out_of_attempts():
            self.attempt.outcome = "ambiguous_retry"
            return self._retry_later(error.code, error.message)
        self.attempt.outcome = "needs_review"
        return self._settle(
            PostStatus.NEEDS_REVIEW,
            "needs_review",
            last_error_code=error.code,
            last_error_message=f"{error.message}; {verdict.reason}: check before retrying",
        )

    def _refused(self, error: ProviderError) -> Outcome:
        """Every answer that proves the post was not created, by class (DESIGN.md §3)."""
        self._note(error)
        if isinstance(error, RateLimited):
            return self._rate_limited(error)
        if isinstance(error, AuthExpired):
            return self._auth_expired(error)
        if isinstance(error, TransientError) and not self._out_of_attempts():
            self.attempt.outcome = "transient"
            return self._retry_later(error.code, error.message)
        if isinstance(error, ReauthRequired):
            # A grant is declared dead only by its refresh, under the lease; a network without
            # refresh tokens has nothing else to ask.
            if self.provider.refreshes_tokens:
                return self._auth_expired(error)
            return self._wait_for_user(error)
        self.attempt.outcome = "transient" if isinstance(error, TransientError) else "failed"
        return self._fail(error.code, error.message)

    def _rate_limited(self, error: RateLimited) -> Outcome:
        self.attempt.outcome = "rate_limited"
        _pause_integration(self.session, self.integration, error.reset_at)
        # Waiting for a reset is not a failure, but a post cannot wait for ever.
        if attempts_since_reschedule(self.post, self.attempt.attempt_number) >= (
            self.settings.publish_max_attempts * 2
        ):
            return self._fail(error.code, error.message)
        return self._retry_at(max(error.reset_at, utcnow()), error.code, error.message)

    def _wait_for_user(self, error: ProviderError) -> Outcome:
        """The network refused a credential it cannot refresh: the connection needs its user
        (:mod:`herald.reauth`), and this post waits with the others until they reconnect."""
        self.attempt.outcome = "reauth_required"
        reauth.needs_reauth(
            self.session,
            self.integration,
            token_version=self.token_version,
            reason=error.message,
            code=error.code,
        )
        now = self.session.scalar(
            select(Integration.status).where(Integration.id == self.integration.id)
        )
        if now is not IntegrationStatus.NEEDS_REAUTH:  # reconnected meanwhile: try again soon
            return self._retry_later(error.code, error.message)
        return self._settle(
            PostStatus.RETRYING,
            "needs_reauth",
            next_attempt_at=None,
            last_error_code=reauth.WAITING_CODE,
            last_error_message=reauth.WAITING_MESSAGE,
        )

    def _auth_expired(self, error: AuthExpired | ReauthRequired) -> Outcome:
        """The access token was refused. Only a refresh can tell an expired token from a dead
        grant, so the integration is never marked dead here: the post waits for a refresh of
        the tokens it used, and the refresh makes it due (the dispatcher publishes it)."""
        if not self.provider.refreshes_tokens:
            return self._wait_for_user(error)
        self.attempt.outcome = "auth_expired"
        # Waiting for a refresh is not a failure, but a post cannot wait for ever.
        if attempts_since_reschedule(self.post, self.attempt.attempt_number) >= (
            self.settings.publish_max_attempts * 2
        ):
            return self._fail(error.code, error.message)
        # The lease fallback covers a refresh that was lost; a refresh makes the post due.
        wait_until = utcnow() + timedelta(seconds=self.settings.token_refresh_lease_s)
        request_refresh(
            self.session, self.integration.id, token_version=self.token_version, until=wait_until
        )
        retry = self._settle(
            PostStatus.RETRYING,
            AuthExpired.code,
            next_attempt_at=wait_until,
            last_error_code=AuthExpired.code,  # what the refresh makes due
            last_error_message=error.message[:2000],
        )
        if retry.status is None:
            return retry
        return Outcome(
            retry.status,
            "auth_expired",
            refresh=self.integration.id,
            seen_token_version=self.token_version,
        )

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

    def _retry_later(self, code: str, message: str) -> Outcome:
        """Retry after the backoff for this attempt (exponential, with jitter)."""
        used = attempts_since_reschedule(self.post, self.attempt.attempt_number)
        return self._retry_at(utcnow() + backoff(used, self.settings), code, message)

    def _retry_at(self, when: datetime, code: str, message: str) -> Outcome:
        return self._settle(
            PostStatus.RETRYING,
            code,
            next_attempt_at=when,
            last_error_code=code,
            last_error_message=message[:2000],
        )

    def _fail(self, code: str, message: str) -> Outcome:
        return self._settle(
            PostStatus.FAILED, code, last_error_code=code, last_error_message=message[:2000]
        )

    def _settle(
        self,
        to: PostStatus,
        kind: str,
        *,
        from_: Sources = PostStatus.PUBLISHING,
        **values: Any,
    ) -> Outcome:
        """Move the post this run claimed out of ``publishing`` (or, for a published answer,
        out of ``from_``), only while it is still this attempt's: a run whose worker
        was paused past the sweep never moves a post the sweep or a newer attempt holds. A loss
        is logged and counted (something moved a post in flight) and reported as
        :data:`LOST`."""
        won = move(
            self.session,
            self.post.id,
            from_=from_,
            to=to,
            site="publish",
            owned=True,
            only_if=(Post.attempts == self.attempt.attempt_number,),
            # A loss of a move that could start from review too is reported from the status
            # this run claimed.
            reported_from=PostStatus.PUBLISHING if isinstance(from_, tuple) else None,
            **values,
        )
        return Outcome(to, kind) if won else LOST


def record_answer(
    session: Session, answer: NetworkAnswer, settings: Settings, keys: KeyRing
) -> Outcome:
    """Record the answer a publish run could not (``herald.posts.record_outcome``); never
    publishes. Only the answer of the attempt it belongs to is taken (same attempt, same task),
    and only while that attempt's outcome is still open, or the sweep gave the post to review
    before a published answer could arrive."""
    row = session.execute(
        select(Post, Integration, PublishAttempt)
        .join(Integration, Integration.id == Post.integration_id)
        .join(PublishAttempt, PublishAttempt.post_id == Post.id)
        .where(Post.id == answer.post_id, PublishAttempt.id == answer.attempt_id)
    ).first()
    if row is None or row[2].task_id != answer.task_id:
        log.warning("publish.answer_refused", post_id=str(answer.post_id))
        return NOT_MINE
    post, integration, attempt = row[0], row[1], row[2]
    network_answer = restored(answer, integration.provider)
    late = network_answer.result is not None and post.status is PostStatus.NEEDS_REVIEW
    if not late and (post.status is not PostStatus.PUBLISHING or attempt.finished_at is not None):
        log.info("publish.answer_settled", post_id=str(post.id), status=post.status.value)
        return Outcome(post.status, "already_settled")
    provider = provider_for(integration.provider, settings)
    run = _Run(session, post, integration, attempt, provider, settings, keys)
    return run.record(network_answer, from_=PostStatus.NEEDS_REVIEW if late else None)


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
