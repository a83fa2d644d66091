"""The lifecycle as a table: (state, verdict, elapsed) → next state and what receivers hear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.alerts.lifecycle import Current, Verdict, apply_behaviour, decide
from herald.models import AlertStatus, StateBehaviour

NOW = datetime(2026, 1, 1, tzinfo=UTC)
S, V = AlertStatus, Verdict


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


CASES = [
    # current, verdict, → status, told
    (Current(None), V.HOLDS, S.FIRING, "firing"),  # for = 0 in this table
    (Current(None), V.CLEAR, None, None),
    (Current(None), V.NO_DATA, S.NO_DATA, "no_data"),
    (Current(None), V.ERROR, S.ERROR, "error"),
    (Current(None), V.KEEP, None, None),
    (Current(S.PENDING, ago(10)), V.CLEAR, S.RESOLVED, None),  # never fired: silent
    (Current(S.FIRING, ago(99), told=True), V.HOLDS, S.FIRING, None),
    (Current(S.FIRING, ago(99), told=True), V.CLEAR, S.RESOLVED, "resolved"),
    (Current(S.FIRING, ago(99), told=True), V.NO_DATA, S.NO_DATA, "no_data"),
    (Current(S.FIRING, ago(99), told=True), V.KEEP, S.FIRING, None),
    (Current(S.RECOVERING, ago(99), ago(5), told=True), V.HOLDS, S.FIRING, None),
    (Current(S.NO_DATA, ago(9), told=True), V.NO_DATA, S.NO_DATA, None),
    (Current(S.NO_DATA, ago(9), told=True), V.CLEAR, S.RESOLVED, "resolved"),
    (Current(S.NO_DATA, ago(9), told=True), V.HOLDS, S.FIRING, "firing"),
    (Current(S.ERROR, ago(9), told=True), V.ERROR, S.ERROR, None),
    (Current(S.ERROR, ago(9), told=True), V.CLEAR, S.RESOLVED, "resolved"),
]


@pytest.mark.parametrize(("current", "verdict", "status", "told"), CASES)
def test_transitions(
    current: Current, verdict: Verdict, status: AlertStatus | None, told: str | None
) -> None:
    decision = decide(current, verdict, NOW, for_s=0, keep_firing_for_s=0)
    assert (decision.status, decision.tell) == (status, told)


def test_pending_fires_once_for_has_elapsed() -> None:
    pending = Current(S.PENDING, ago(59))
    assert decide(pending, V.HOLDS, NOW, for_s=60, keep_firing_for_s=0).status is S.PENDING
    fired = decide(Current(S.PENDING, ago(60)), V.HOLDS, NOW, for_s=60, keep_firing_for_s=0)
    assert (fired.status, fired.tell, fired.pending_since) == (S.FIRING, "firing", ago(60))


def test_keep_firing_for_delays_the_resolve() -> None:
    firing = Current(S.FIRING, ago(300), told=True)
    first = decide(firing, V.CLEAR, NOW, for_s=0, keep_firing_for_s=120)
    assert (first.status, first.tell, first.recovering_since) == (S.RECOVERING, None, NOW)
    still = Current(S.RECOVERING, ago(300), ago(119), told=True)
    assert decide(still, V.CLEAR, NOW, for_s=0, keep_firing_for_s=120).status is S.RECOVERING
    done = Current(S.RECOVERING, ago(300), ago(120), told=True)
    assert decide(done, V.CLEAR, NOW, for_s=0, keep_firing_for_s=120).tell == "resolved"


@pytest.mark.parametrize(
    ("behaviour", "verdict"),
    [
        (StateBehaviour.STATE, V.NO_DATA),
        (StateBehaviour.ALERTING, V.HOLDS),
        (StateBehaviour.OK, V.CLEAR),
        (StateBehaviour.KEEP_LAST, V.KEEP),
    ],
)
def test_behaviours_map_no_data_and_error(behaviour: StateBehaviour, verdict: Verdict) -> None:
    assert apply_behaviour(V.NO_DATA, no_data=behaviour, error=StateBehaviour.OK) == verdict
    error = V.ERROR if behaviour is StateBehaviour.STATE else verdict
    assert apply_behaviour(V.ERROR, no_data=StateBehaviour.OK, error=behaviour) == error
    assert apply_behaviour(V.HOLDS, no_data=behaviour, error=behaviour) == V.HOLDS
