"""The lifecycle of one alert identity, as a pure function of its state and a verdict.

::

    (none) ──true──→ pending ──true for `for`──→ firing ──false──→ recovering ──false for
      │                 │                          ↑  └───────── (keep_firing_for = 0) ───┐
      │                 └──false──→ (closed, never told)         │                        ↓
      └── no data / error ──→ no_data | error ───────────────────┴──────false──────→ resolved

A verdict is what one evaluation found for the identity: the condition holds, does not, the
series had fewer samples than the rule's minimum (``no_data``), or the evaluation failed
(``error``). The rule's ``no_data_state`` and ``error_state`` first turn the last two into
another verdict, as Grafana does: ``alerting`` (holds), ``ok`` (does not), ``keep_last``
(change nothing) or ``state`` (enter the ``no_data`` / ``error`` state).

A decision says which state comes next and what receivers should hear: ``firing``,
``no_data``, ``error`` or ``resolved``. A close is told as ``resolved`` only if something was
told before (a pending alert that never fired closes silently).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.models import AlertStatus, StateBehaviour


class Verdict(enum.StrEnum):
    HOLDS = "holds"
    CLEAR = "clear"
    NO_DATA = "no_data"
    ERROR = "error"
    KEEP = "keep"


@dataclass(frozen=True, slots=True)
class Current:
    """The open alert of an identity, or ``status=None`` when there is none."""

    status: AlertStatus | None
    pending_since: datetime | None = None
    recovering_since: datetime | None = None
    told: bool = False  # receivers heard about this alert at least once


@dataclass(frozen=True, slots=True)
class Decision:
    status: AlertStatus | None  # None: no open alert (nothing opened, or it closed)
    tell: str | None = None  # the transition receivers hear about
    pending_since: datetime | None = None
    recovering_since: datetime | None = None

    @property
    def closes(self) -> bool:
        return self.status in (None, AlertStatus.RESOLVED)


def apply_behaviour(verdict: Verdict, *, no_data: StateBehaviour, error: StateBehaviour) -> Verdict:
    """Turn ``no_data`` and ``error`` into what the rule says they mean."""
    behaviour = {Verdict.NO_DATA: no_data, Verdict.ERROR: error}.get(verdict)
    if behaviour is None or behaviour is StateBehaviour.STATE:
        return verdict
    return {
        StateBehaviour.ALERTING: Verdict.HOLDS,
        StateBehaviour.OK: Verdict.CLEAR,
        StateBehaviour.KEEP_LAST: Verdict.KEEP,
    }[behaviour]


def _close(current: Current) -> Decision:
    if current.status is None:
        return Decision(None)
    return Decision(AlertStatus.RESOLVED, "resolved" if current.told else None)


def _holds(current: Current, now: datetime, for_s: int) -> Decision:
    status = current.status
    if status in (AlertStatus.FIRING, AlertStatus.RECOVERING):
        return Decision(AlertStatus.FIRING, pending_since=current.pending_since)
    since = current.pending_since if status is AlertStatus.PENDING else now
    assert since is not None
    if now - since >= timedelta(seconds=for_s):
        return Decision(AlertStatus.FIRING, "firing", pending_since=since)
    return Decision(AlertStatus.PENDING, pending_since=since)


def _clear(current: Current, now: datetime, keep_firing_for_s: int) -> Decision:
    if current.status not in (AlertStatus.FIRING, AlertStatus.RECOVERING):
        return _close(current)
    since = current.recovering_since if current.status is AlertStatus.RECOVERING else now
    assert since is not None
    if now - since >= timedelta(seconds=keep_firing_for_s):
        return _close(current)
    return Decision(
        AlertStatus.RECOVERING, pending_since=current.pending_since, recovering_since=since
    )


def decide(
    current: Current, verdict: Verdict, now: datetime, *, for_s: int, keep_firing_for_s: int
) -> Decision:
    """The next state of one identity after one evaluation (see the module docstring)."""
    if verdict is Verdict.KEEP:
        return Decision(current.status, None, current.pending_since, current.recovering_since)
    if verdict is Verdict.HOLDS:
        return _holds(current, now, for_s)
    if verdict is Verdict.CLEAR:
        return _clear(current, now, keep_firing_for_s)
    state = AlertStatus.NO_DATA if verdict is Verdict.NO_DATA else AlertStatus.ERROR
    if current.status is state:
        return Decision(state, None, current.pending_since)
    return Decision(state, state.value, current.pending_since or now)
