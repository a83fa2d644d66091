"""Per-provider circuit breakers: a network that fails for everyone makes its posts wait.

A post's own retries (``retrying`` with backoff) are right when one request fails. When a
network is down for every account they only burn each post's attempt budget, one by one.
So after each failed attempt the publisher asks :func:`observe` to read the provider's recent
attempts (``publish_attempts``, over ``HERALD_CIRCUIT_WINDOW_S``); when at least
``HERALD_CIRCUIT_MIN_ATTEMPTS`` attempts show a share of 5xx answers, timeouts and
unreachable connections of ``HERALD_CIRCUIT_FAILURE_RATIO`` or more, from at least
``HERALD_CIRCUIT_MIN_INTEGRATIONS`` distinct integrations, the circuit opens::

    closed ──(failure share over the window)──→ open ──(probe_at passed)──→ half_open
      ↑                                           ↑                            │
      └───────────(a probe got an answer)─────────┼────────────────────────────┤
                                                  └──(a probe failed)──────────┘

- **open**: the dispatcher queues none of the provider's posts; a post that reaches publish
  anyway goes to ``retrying`` until ``probe_at`` without spending an attempt.
- **half_open**: at most ``HERALD_CIRCUIT_PROBE_POSTS`` posts per probe round reach the
  network. The first answer closes the circuit and makes the waiting posts due at once; a
  failure reopens it, with the wait doubling up to eight times ``HERALD_CIRCUIT_OPEN_S``. A
  round whose probes never report (a worker died) ends after ``HERALD_PUBLISHING_TIMEOUT_S``.

Rate limits are per integration and stay there (``integrations.rate_limited_until``): a 429
is an answer, so it counts as the network being up.

Many worker processes and two dispatchers share one row per provider in
``provider_circuits``; every change is a conditional UPDATE naming the state it expects, so of
racing writers exactly one moves the circuit. Probe slots are taken in the publish run's own
transaction (committed with its claim, undone if the claim loses): however many dispatchers
queue posts of a half-open provider, no more than the bound reach the network. See
docs/decisions.md for why the state lives in Postgres.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Update, and_, case, distinct, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from herald.models import (
    CircuitState,
    Integration,
    Post,
    PostStatus,
    ProviderCircuit,
    PublishAttempt,
    released_at,
)
from herald.providers.base import (
    AmbiguousOutcome,
    ClaimLapsed,
    ClaimLapsedMidCall,
    MediaUnavailable,
    ProviderError,
    TransientError,
)
from herald.security.crypto import DecryptionError
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.publishing")

#: The error code a post waiting on an open circuit carries (``posts.last_error_code``).
WAITING_CODE = "circuit_open"
#: Attempt error codes that count as the network failing (5xx, timeouts, no connection).
FAILURE_CODES = (TransientError.code, AmbiguousOutcome.code)
_MAX_BACKOFF_DOUBLINGS = 3
C = ProviderCircuit


@dataclass(frozen=True, slots=True)
class Gate:
    """What the dispatcher may queue now: providers held back, and how many posts of each of
    them may go as probes (the bound itself is enforced at publish, by :func:`admit`)."""

    held: frozenset[str] = frozenset()
    probes: Mapping[str, int] = field(default_factory=dict)


def network_health(error: ProviderError | DecryptionError | None) -> bool | None:
    """What one attempt says about its network: True (it answered), False (5xx, timeout,
    unreachable), or None (no evidence: the attempt never reached it)."""
    if error is None:
        return True
    if isinstance(error, MediaUnavailable | ClaimLapsed | ClaimLapsedMidCall):
        return None  # the media's host failed, or nothing was sent: not the network
    if isinstance(error, TransientError | AmbiguousOutcome):
        return False
    if isinstance(error, ProviderError) and error.http_status is not None:
        return True
    return None


# -- the dispatcher's view ----------------------------------------------------------------------


def gate(session: Session, settings: Settings, now: datetime) -> Gate:
    if not settings.circuit_enabled:
        return Gate()
    rows = session.execute(
        select(C.provider, C.state, C.probe_at, C.probes_sent).where(C.state != CircuitState.CLOSED)
    ).all()
    most = settings.circuit_probe_posts
    probes: dict[str, int] = {}
    for provider, state, probe_at, sent in rows:
        round_over = probe_at is None or probe_at <= now
        room = most if round_over else (most - sent if state is CircuitState.HALF_OPEN else 0)
        if room > 0:
            probes[provider] = room
    return Gate(held=frozenset(row[0] for row in rows), probes=probes)


def held_providers(session: Session, settings: Settings, now: datetime) -> frozenset[str]:
    """Providers whose circuit is not closed (their network is failing for everyone) and
    whose probe time has not come: the sweep leaves their stuck posts alone until then. Past
    it, the sweep's lookup goes: only a publish probes a circuit, and a network with no other
    post to send would otherwise be probed by nobody, its stuck posts left ``publishing``."""
    if not settings.circuit_enabled:
        return frozenset()
    return frozenset(
        session.scalars(select(C.provider).where(C.state != CircuitState.CLOSED, C.probe_at > now))
    )


# -- publish: admission before the claim, observation after the outcome -----------------------


def admit(session: Session, provider: str, settings: Settings, now: datetime) -> datetime | None:
    """None when a post of ``provider`` may be sent now (the circuit is closed, or this run
    took a probe slot in the current transaction); otherwise the time to wait until."""
    if not settings.circuit_enabled:
        return None
    state = _state(session, provider)
    if (
        state is None
        or state[0] is CircuitState.CLOSED
        or _take_probe_slot(session, provider, settings, now)
    ):
        return None
    state = _state(session, provider)
    if state is None or state[0] is CircuitState.CLOSED:
        return None
    if state[0] is CircuitState.OPEN and state[1] is not None:
        return state[1]
    # Half-open with every probe slot taken: look again soon (a closing releases it at once).
    return now + timedelta(seconds=settings.circuit_open_s)


def _take_probe_slot(session: Session, provider: str, settings: Settings, now: datetime) -> bool:
    """Take one of the round's probe slots, starting a round when none runs (conditional
    UPDATEs: of runs racing for the last slot, one gets it)."""
    round_end = now + timedelta(seconds=settings.publishing_timeout_s)
    if _won(
        session,
        _circuit(provider, C.state == CircuitState.OPEN, C.probe_at <= now).values(
            state=CircuitState.HALF_OPEN, probes_sent=1, probe_at=round_end, updated_at=now
        ),
    ):
        _entered(provider, CircuitState.HALF_OPEN, probe_round_ends=round_end.isoformat())
        return True
    new_round = C.probe_at <= now
    if _won(
        session,
        _circuit(
            provider,
            C.state == CircuitState.HALF_OPEN,
            or_(new_round, C.probes_sent < settings.circuit_probe_posts),
        ).values(
            probes_sent=case((new_round, 1), else_=C.probes_sent + 1),
            probe_at=case((new_round, round_end), else_=C.probe_at),
            updated_at=now,
        ),
    ):
        log.info("circuit.probe", provider=provider)
        return True
    return False


def observe(
    session: Session, provider: str, up: bool | None, settings: Settings, now: datetime
) -> None:
    """Record what an attempt said about ``provider``'s network (see :func:`network_health`);
    call it in the transaction that records the attempt, after the attempt row is final."""
    if not settings.circuit_enabled:
        return
    state = _state(session, provider)
    current = state[0] if state is not None else CircuitState.CLOSED
    if current is CircuitState.HALF_OPEN:
        if up is None:
            # The attempt never reached the network (its content or token was refused first):
            # give its probe slot back rather than leave the round waiting for a verdict.
            session.execute(
                _circuit(provider, C.state == CircuitState.HALF_OPEN, C.probes_sent > 0).values(
                    probes_sent=C.probes_sent - 1
                )
            )
        elif up:
            _close(session, provider, now)
        else:
            _reopen(session, provider, settings, now)
    elif current is CircuitState.CLOSED and up is False:
        _open_if_failing(session, provider, settings, now)


def _open_if_failing(session: Session, provider: str, settings: Settings, now: datetime) -> None:
    failed = PublishAttempt.error_code.in_(FAILURE_CODES)
    answered = or_(PublishAttempt.outcome == "published", PublishAttempt.http_status.is_not(None))
    attempts, failures, integrations = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((failed, 1), else_=0)), 0),
            func.count(distinct(case((failed, Post.integration_id), else_=None))),
        )
        .select_from(PublishAttempt)
        .join(Post, Post.id == PublishAttempt.post_id)
        .where(
            PublishAttempt.provider == provider,
            PublishAttempt.started_at >= now - timedelta(seconds=settings.circuit_window_s),
            PublishAttempt.finished_at.is_not(None),
            or_(failed, answered),
        )
    ).one()
    if (
        attempts < settings.circuit_min_attempts
        or failures < attempts * settings.circuit_failure_ratio
        or integrations < settings.circuit_min_integrations
    ):
        return
    probe_at = now + timedelta(seconds=settings.circuit_open_s)
    reason = (
        f"{failures} of {attempts} attempts from {integrations} integrations failed "
        f"(5xx, timeout or unreachable) in the last {settings.circuit_window_s:g} s"
    )
    opened = {
        "state": CircuitState.OPEN,
        "opened_at": now,
        "probe_at": probe_at,
        "probes_sent": 0,
        "window_attempts": attempts,
        "window_failures": failures,
        "window_integrations": integrations,
        "openings": 1,
        "reason": reason,
        "updated_at": now,
    }
    insert = (postgresql if _dialect(session) == "postgresql" else sqlite).insert(C)
    stmt = insert.values(provider=provider, **opened).on_conflict_do_update(
        index_elements=[C.provider], set_=opened, where=C.state == CircuitState.CLOSED
    )
    if _won(session, stmt):
        _entered(provider, CircuitState.OPEN, reason=reason, probe_at=probe_at.isoformat())


def _reopen(session: Session, provider: str, settings: Settings, now: datetime) -> None:
    state = _state(session, provider)
    openings = (state[2] if state is not None else 0) + 1
    wait = settings.circuit_open_s * 2 ** min(openings - 1, _MAX_BACKOFF_DOUBLINGS)
    probe_at = now + timedelta(seconds=wait)
    if _won(
        session,
        _circuit(provider, C.state == CircuitState.HALF_OPEN).values(
            state=CircuitState.OPEN,
            probe_at=probe_at,
            probes_sent=0,
            openings=C.openings + 1,
            reason="a probe failed",
            updated_at=now,
        ),
    ):
        _entered(provider, CircuitState.OPEN, reason="a probe failed", probe_at=str(probe_at))


def _close(session: Session, provider: str, now: datetime) -> None:
    if not _won(
        session,
        _circuit(provider, C.state == CircuitState.HALF_OPEN).values(
            state=CircuitState.CLOSED, probe_at=None, probes_sent=0, openings=0, updated_at=now
        ),
    ):
        return
    # The posts that waited are due now, not at the probe time they were given.
    released = session.execute(
        update(Post)
        .where(
            Post.status == PostStatus.RETRYING,
            Post.last_error_code == WAITING_CODE,
            Post.integration_id.in_(select(Integration.id).where(Integration.provider == provider)),
        )
        .values(next_attempt_at=released_at(now))
        .execution_options(synchronize_session=False)
    )
    assert isinstance(released, CursorResult)
    _entered(provider, CircuitState.CLOSED, released=released.rowcount)


# -- plumbing -------------------------------------------------------------------------------------


def _state(session: Session, provider: str) -> tuple[CircuitState, datetime | None, int] | None:
    row = session.execute(
        select(C.state, C.probe_at, C.openings).where(C.provider == provider)
    ).first()
    return (row[0], row[1], row[2]) if row is not None else None


def _circuit(provider: str, *conditions: Any) -> Update:
    return (
        update(C)
        .where(and_(C.provider == provider, *conditions))
        .execution_options(synchronize_session=False)
    )


def _won(session: Session, stmt: Any) -> bool:
    result = session.execute(stmt)
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _entered(provider: str, state: CircuitState, **details: object) -> None:
    metrics.provider_circuit_transitions.add(1, {"provider": provider, "state": state.value})
    emit = log.warning if state is CircuitState.OPEN else log.info
    emit(f"circuit.{state.value}", provider=provider, **details)
