"""Refresh one integration's tokens: single-flight, and never stranding a healthy connection.

X, Discord and Bluesky rotate refresh tokens and treat a second use of a spent one as theft
(revoking the whole grant), so two refreshes of one integration must never both call the
network, and a refresh must never mistake someone else's win for a dead grant. The flow, each
step a short transaction of its own (none is open during the network call):

1. Claim the refresh lease (:mod:`herald.tokens.lease`). A refresh that does not get it stops:
   the holder's result serves everyone.
2. Re-read the integration. If its ``token_version`` moved past the version the caller saw
   (``seen_version``: the tokens a publish had refused, or the beat read), another refresh
   already won: use its tokens, do not rotate again.
3. Refuse before any call when Herald lacks the provider's OAuth client credentials.
4. Call the network and record the outcome:

   =================== ================================= ================== =================
   outcome             integration                       its waiting posts  lease
   =================== ================================= ================== =================
   refreshed           new tokens, ``active``            due now            released
   lost_race           untouched: the winner's tokens    due now            released
   invalid_grant       ``needs_reauth``, confirmed on     wait for the user  released
                       the version read (herald.reauth)
   configuration_error untouched (Herald's fault)        wait               held
   transient           untouched (failure count + 1)     wait               pending (retry)
   token_unreadable    ``needs_reauth``, as invalid_grant wait for the user  released
   =================== ================================= ================== =================

The new tokens exist nowhere else once the network has rotated them, so their write outlives a
lost database connection: it is tried again on a fresh connection
(``HERALD_PUBLISH_RECORD_ATTEMPTS``), then carried out of the run sealed
(:class:`TokensNotStored`) to ``herald.tokens.store_refreshed``, which stores them when the
database is back, under the lease the refresh still holds, and never calls the network.

Every write of tokens or status names the token version it was decided on, so it never
overwrites a newer one. "Due now" is the only way a refresh leads to a publish: the waiting
posts' ``next_attempt_at`` becomes now, and the dispatcher takes them on its next tick.
Each refresh leaves a ``token_refresh_attempts`` row with its outcome.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from opentelemetry import trace
from sqlalchemy import or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db, reauth
from herald.contracts import SealedTokens, StoreRefreshedTokens
from herald.db import session_scope, tenant_scope
from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    TokenRefreshAttempt,
    released_at,
    set_status,
    utcnow,
)
from herald.models.integration import HEALTHY
from herald.providers.base import (
    AuthExpired,
    ConfigurationError,
    Provider,
    ProviderError,
    ReauthRequired,
    TokenSet,
)
from herald.providers.registry import UnknownProvider, missing_client_credentials, provider_for
from herald.security import audit
from herald.security.audit import Actor, EventType, Outcome, Severity
from herald.security.credentials import account_of, open_tokens, sealed_values
from herald.security.crypto import DecryptionError, KeyRing, UnknownKey
from herald.settings import Settings
from herald.telemetry import context, metrics
from herald.telemetry.errors import describe_error
from herald.tokens import lease

log = structlog.get_logger("herald.tokens")


class RefreshFailed(Exception):
    """A refresh that may succeed later (network trouble, rate limit): retried by the task."""


class TokensNotStored(Exception):
    """The network rotated the tokens and the database would not take them in time. They exist
    nowhere else (X, Discord and Bluesky have spent the old refresh token): they leave the run
    sealed, for ``herald.tokens.store_refreshed``, which stores them when the database is back
    and never calls the network."""

    def __init__(self, deferred: StoreRefreshedTokens) -> None:
        super().__init__(f"integration {deferred.integration_id}: new tokens not stored yet")
        self.deferred = deferred


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    outcome: str
    status: IntegrationStatus | None
    reason: str
    error_code: str | None = None

    @property
    def refreshed(self) -> bool:
        return self.outcome == "refreshed"


def refresh_integration(
    session: Session,
    integration_id: uuid.UUID,
    settings: Settings,
    keys: KeyRing,
    *,
    seen_version: int | None = None,
    then_publish: uuid.UUID | None = None,
    task_id: str | None = None,
) -> RefreshOutcome:
    """Refresh ``integration_id`` once, whoever else is trying (see the module docstring).
    Raises :class:`RefreshFailed` after recording a transient failure."""
    owner = f"{task_id or 'direct'}:{uuid.uuid4().hex[:12]}"
    claimed = lease.claim(session, integration_id, owner, lease_s=settings.token_refresh_lease_s)
    integration = session.execute(
        select(Integration)
        .where(Integration.id == integration_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    session.commit()
    if integration is None:
        return RefreshOutcome("skipped", None, "no such integration")
    if integration.status not in HEALTHY:
        if claimed:
            lease.release(session, integration_id, owner)
            session.commit()
        return RefreshOutcome("skipped", integration.status, "the integration needs the user")
    run = _Refresh(session, integration, settings, keys, owner, then_publish, task_id)
    if seen_version is not None and integration.token_version > seen_version:
        return run.lost_race(seen_version, "already refreshed by another worker")
    if not claimed:  # the holder makes the posts due when it is done
        return run.lost_race(seen_version, "another refresh holds the lease", make_due=False)
    return run.call_and_record()


def store_refreshed(
    session: Session,
    deferred: StoreRefreshedTokens,
    settings: Settings,
    keys: KeyRing,
    *,
    task_id: str | None = None,
) -> RefreshOutcome:
    """Store tokens a refresh got from the network but could not store (:class:`TokensNotStored`),
    over the token version that refresh read, and finish its attempt; never calls the network."""
    integration = session.execute(
        select(Integration)
        .where(Integration.id == deferred.integration_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    recorded = session.execute(
        select(TokenRefreshAttempt.finished_at).where(TokenRefreshAttempt.id == deferred.attempt_id)
    ).scalar_one_or_none()
    if integration is None or recorded is not None:
        session.commit()  # gone, or handed on twice and stored by the first: nothing to do
        why = "no such integration" if integration is None else "already recorded"
        return RefreshOutcome("skipped", None, why)
    run = _Refresh(
        session, integration, settings, keys, deferred.lease_owner, deferred.then_publish, task_id
    )
    # The columns the refresh would have written: the access token's expiry always (none is a
    # value: unknown), the others only when the answer had them (sealed_values).
    sealed = deferred.tokens
    values = sealed.model_dump(exclude_none=True) | {"token_expires_at": sealed.token_expires_at}
    outcome = run._store(values, deferred.read_version)
    run._finish(deferred.attempt_id, outcome, latency_ms=deferred.latency_ms)
    return outcome


def _aware(value: Any) -> Any:
    """A naive datetime read as UTC (the contract takes aware ones only)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(slots=True)
class _Refresh:
    """One refresh that holds the lease (or lost it): the call, then its recorded outcome."""

    session: Session
    integration: Integration
    settings: Settings
    keys: KeyRing
    owner: str
    then_publish: uuid.UUID | None
    task_id: str | None
    #: This refresh cut the connection off: :func:`herald.reauth.needs_reauth` audited it.
    cut_off: bool = False

    def call_and_record(self) -> RefreshOutcome:
        try:
            provider = provider_for(self.integration.provider, self.settings)
        except UnknownProvider as exc:
            lease.release(self.session, self.integration.id, self.owner)
            self.session.commit()
            return RefreshOutcome("skipped", self.integration.status, str(exc))
        read_version = self.integration.token_version
        attempt_id = _open_attempt(self.integration, read_version, self.task_id)
        started = time.perf_counter()
        try:
            tokens = self._call(provider)
        except ConfigurationError as exc:
            outcome = self._client_refused(exc)
        except UnknownKey as exc:
            # This process's key ring is behind (a new key rolled out elsewhere first): it says
            # nothing about the grant, so nobody is cut off; the retry may run where the key is.
            log.error("token.key_unknown", integration_id=str(self.integration.id), error=str(exc))
            outcome = self._transient(str(exc), exc.code)
        except (ReauthRequired, AuthExpired, DecryptionError) as exc:
            outcome = self._grant_refused(exc, read_version)
        except ProviderError as exc:
            outcome = self._transient(exc.message, exc.code)
        except Exception as exc:  # an adapter's bug: the attempt is still finished
            error_type, error = describe_error(exc)
            log.exception("token.refresh_unexpected", integration_id=str(self.integration.id))
            outcome = self._transient(f"{error_type}: {error}", "unexpected_error")
        else:
            latency_ms = round((time.perf_counter() - started) * 1000)
            return self._record_refreshed(tokens, read_version, attempt_id, latency_ms)
        self._finish(attempt_id, outcome, latency_ms=round((time.perf_counter() - started) * 1000))
        if outcome.outcome == "transient":
            raise RefreshFailed(outcome.reason)
        return outcome

    def _call(self, provider: Provider) -> TokenSet:
        name = self.integration.provider
        missing = missing_client_credentials(self.settings, name)
        if missing:
            raise ConfigurationError(
                f"no OAuth client {' or '.join(missing)} configured for {name}: set it in "
                "HERALD_PROVIDER_CREDENTIALS",
                provider=name,
                provider_code="missing_client_credentials",
            )
        tokens = open_tokens(self.integration, self.keys)
        return provider.refresh(account_of(self.integration), tokens)

    # -- outcomes (each writes in the session; _finish commits) -------------------------------

    def _record_refreshed(
        self, tokens: TokenSet, read_version: int, attempt_id: uuid.UUID, latency_ms: int
    ) -> RefreshOutcome:
        """Store the rotated tokens, on a fresh connection after a lost one; when the database
        stays away, carry them out of the run sealed (:class:`TokensNotStored`)."""
        values = sealed_values(self.integration, tokens, self.keys)
        # Read now: a rollback between tries expires the row, and reading it again needs the
        # database that is away.
        integration_id = self.integration.id

        def write() -> RefreshOutcome:
            outcome = self._store(values, read_version)
            self._finish(attempt_id, outcome, latency_ms=latency_ms)
            return outcome

        try:
            return db.write_durably(
                self.session,
                write,
                attempts=self.settings.publish_record_attempts,
                retry_event="token.store_retry",
            )
        except SQLAlchemyError as exc:
            if not db.lost_connection(exc):
                raise
            deferred = StoreRefreshedTokens(
                integration_id=integration_id,
                read_version=read_version,
                attempt_id=attempt_id,
                lease_owner=self.owner,
                then_publish=self.then_publish,
                latency_ms=latency_ms,
                tokens=SealedTokens(**{k: _aware(v) for k, v in values.items()}),
            )
            raise TokensNotStored(deferred) from None

    def _store(self, values: dict[str, Any], read_version: int) -> RefreshOutcome:
        stored = _rowcount(
            self.session.execute(
                update(Integration)
                .where(
                    Integration.id == self.integration.id,
                    Integration.token_version == read_version,
                )
                .values(**values, refresh_failure_count=0)
                .execution_options(synchronize_session=False)
            )
        )
        if not stored and self._already_mine(values):
            stored = 1  # a commit of this write whose reply was lost: it landed
        if not stored:
            # Only after the lease expired under a refresh slower than any task may run, or a
            # reconnect in between: the newer tokens stay, these are dropped.
            log.error("token.refresh_superseded", integration_id=str(self.integration.id))
            return self._after_lost_race("the tokens were replaced during this refresh")
        set_status(
            self.session,
            self.integration.id,
            IntegrationStatus.ACTIVE,
            token_version=read_version + 1,
            from_=(IntegrationStatus.REFRESH_NEEDED,),
        )
        self._release_and_make_due()
        return RefreshOutcome("refreshed", IntegrationStatus.ACTIVE, "refreshed")

    def _already_mine(self, values: dict[str, Any]) -> bool:
        """Whether the integration holds exactly these sealed tokens (each seal is unique)."""
        held = self.session.execute(
            select(Integration.access_token_ciphertext).where(Integration.id == self.integration.id)
        ).scalar_one_or_none()
        return bool(held == values["access_token_ciphertext"])

    def _grant_refused(self, error: Exception, read_version: int) -> RefreshOutcome:
        """The network (or our own ciphertext) says the grant is dead. Confirm it on a fresh
        read under the lease: tokens replaced meanwhile are someone else's win, not a death."""
        current = self.session.execute(
            select(Integration.token_version).where(Integration.id == self.integration.id)
        ).scalar_one_or_none()
        if current != read_version:
            return self._after_lost_race("the tokens were replaced during this refresh")
        outcome = "token_unreadable" if isinstance(error, DecryptionError) else "invalid_grant"
        code = error.code if isinstance(error, ProviderError) else outcome
        # Its posts wait for the user (herald.reauth), they are not made due to fail.
        self.cut_off = reauth.needs_reauth(
            self.session,
            self.integration,
            token_version=read_version,
            reason=_message(error),
            code=outcome,
        )
        self._count_failure()
        lease.release(self.session, self.integration.id, self.owner)
        log.warning(
            "token.refresh_refused",
            integration_id=str(self.integration.id),
            provider=self.integration.provider,
            outcome=outcome,
        )
        return RefreshOutcome(outcome, IntegrationStatus.NEEDS_REAUTH, _message(error), code)

    def _client_refused(self, error: ConfigurationError) -> RefreshOutcome:
        """Herald's own client credentials are missing or refused: the operator must act. The
        integration keeps its status and its posts wait (the lease is held) until then."""
        until = utcnow() + timedelta(seconds=self.settings.token_client_error_hold_s)
        lease.hold(self.session, self.integration.id, self.owner, until=until)
        metrics.provider_configuration_errors.add(
            1, {"provider": self.integration.provider, "code": error.provider_code or "refused"}
        )
        log.error(
            "token.refresh_configuration_error",
            integration_id=str(self.integration.id),
            provider=self.integration.provider,
            reason=error.message,
            http_status=error.http_status,
            posts_wait_until=until.isoformat(),
        )
        return RefreshOutcome(
            "configuration_error", self.integration.status, error.message, error.code
        )

    def _transient(self, reason: str, code: str) -> RefreshOutcome:
        """Network trouble (or a key ring behind) says nothing about the grant: status
        untouched, posts keep waiting, and the task's retry may claim the lease again."""
        self._count_failure()
        until = utcnow() + timedelta(seconds=self.settings.token_refresh_lease_s)
        lease.leave_pending(self.session, self.integration.id, self.owner, until=until)
        return RefreshOutcome("transient", self.integration.status, reason, code)

    def lost_race(
        self, seen_version: int | None, reason: str, *, make_due: bool = True
    ) -> RefreshOutcome:
        """Another refresh won (or is winning): record it, and use its tokens."""
        version = self.integration.token_version
        attempt_id = _open_attempt(self.integration, seen_version or version, self.task_id)
        outcome = (
            self._after_lost_race(reason)
            if make_due
            else RefreshOutcome("lost_race", self.integration.status, reason)
        )
        self._finish(attempt_id, outcome, latency_ms=0)
        return outcome

    def _after_lost_race(self, reason: str) -> RefreshOutcome:
        self._release_and_make_due()
        return RefreshOutcome("lost_race", self.integration.status, reason)

    # -- helpers --------------------------------------------------------------------------------

    def _release_and_make_due(self) -> None:
        lease.release(self.session, self.integration.id, self.owner)
        make_due(self.session, self.integration.id, also=self.then_publish)

    def _count_failure(self) -> None:
        self.session.execute(
            update(Integration)
            .where(Integration.id == self.integration.id)
            .values(refresh_failure_count=Integration.refresh_failure_count + 1)
            .execution_options(synchronize_session=False)
        )

    def _finish(self, attempt_id: uuid.UUID, outcome: RefreshOutcome, *, latency_ms: int) -> None:
        attempt = self.session.get(TokenRefreshAttempt, attempt_id)
        version = self.session.execute(
            select(Integration.token_version).where(Integration.id == self.integration.id)
        ).scalar_one_or_none()
        if attempt is not None:  # (gone only if retention purged it while the tokens waited)
            attempt.finished_at = utcnow()
            attempt.latency_ms = latency_ms
            attempt.outcome = outcome.outcome
            if outcome.error_code is not None:
                attempt.error_code = outcome.error_code
                attempt.error_message = outcome.reason[:2000]
            attempt.token_version_after = version
        self._audit(outcome, version)
        self.session.commit()
        provider = self.integration.provider
        metrics.token_refreshes.add(1, {"provider": provider, "outcome": outcome.outcome})
        log.info(
            "token.refresh",
            integration_id=str(self.integration.id),
            provider=provider,
            outcome=outcome.outcome,
            token_version=version,
            latency_ms=latency_ms,
        )

    def _audit(self, outcome: RefreshOutcome, version: int | None) -> None:
        """A refresh that reached the network is a credential use: audited, success or not
        (a lost race used nothing and is not)."""
        if outcome.outcome == "lost_race" or self.cut_off:
            return  # a lost race used nothing; a cut-off is audited once, by herald.reauth
        ok = outcome.refreshed
        audit.record(
            self.session,
            EventType.TOKEN_REFRESH_OK if ok else EventType.TOKEN_REFRESH_FAILED,
            actor=Actor("task", self.task_id or "direct"),
            outcome=Outcome.SUCCESS if ok else Outcome.FAILURE,
            severity=Severity.LOW if ok else Severity.MEDIUM,
            workspace_id=self.integration.workspace_id,
            action="token.refresh",
            resource_type="integration",
            resource_id=str(self.integration.id),
            message=f"{self.integration.provider} token refresh: {outcome.outcome}",
            details={
                "provider": self.integration.provider,
                "outcome": outcome.outcome,
                "error_code": outcome.error_code,
                "token_version": version,
                "refreshed_by": self.owner,
            },
        )


def make_due(session: Session, integration_id: uuid.UUID, *, also: uuid.UUID | None = None) -> int:
    """Make the posts that wait for this integration's token due now (``retrying`` after an
    ``auth_expired`` attempt, plus ``also``); the dispatcher publishes them on its next tick."""
    waiting = Post.last_error_code == AuthExpired.code
    if also is not None:
        waiting = or_(waiting, Post.id == also)
    now = utcnow()
    return _rowcount(
        session.execute(
            update(Post)
            .where(
                Post.integration_id == integration_id,
                Post.status == PostStatus.RETRYING,
                waiting,
            )
            .values(next_attempt_at=released_at(now), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def _message(error: Exception) -> str:
    return error.message if isinstance(error, ProviderError) else str(error)


def _open_attempt(integration: Integration, version_before: int, task_id: str | None) -> uuid.UUID:
    """The attempt row, committed on its own before the network is called."""
    span = trace.get_current_span().get_span_context()
    attempt = TokenRefreshAttempt(
        workspace_id=integration.workspace_id,
        integration_id=integration.id,
        provider=integration.provider,
        token_version_before=version_before,
        correlation_id=context.correlation_id(),
        trace_id=format(span.trace_id, "032x") if span.is_valid else None,
        task_id=task_id,
    )
    with session_scope() as own:
        tenant_scope(own, attempt.workspace_id)
        own.add(attempt)
    return attempt.id
