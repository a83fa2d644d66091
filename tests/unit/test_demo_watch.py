"""The demo's watch waits for posts that a busy machine settles late, and not for ever."""

from __future__ import annotations

import io
import uuid
from collections import Counter

import pytest
from rich.console import Console

from herald import demo
from herald.models import PostStatus


class Clock:
    """A clock that moves only when the watch sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def watch(monkeypatch: pytest.MonkeyPatch, settled_at: list[float]) -> tuple[float, str]:
    """Run the watch over posts that settle at ``settled_at`` (seconds after it starts); return
    how long it watched and what it printed."""
    clock = Clock()
    started = clock.now
    monkeypatch.setattr(demo.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(demo.time, "sleep", clock.sleep)

    def statuses() -> Counter[str]:
        done = sum(1 for at in settled_at if clock.now - started >= at)
        return Counter({"published": done, "queued": len(settled_at) - done})

    monkeypatch.setattr(demo, "_statuses", statuses)
    expected = {uuid.uuid4(): demo.SCENARIO[0] for _ in settled_at}
    assert all(c.expect is PostStatus.PUBLISHED for c in expected.values())
    out = io.StringIO()
    demo._watch(Console(file=out, width=200), expected)
    return clock.now - started, out.getvalue()


def test_the_watch_ends_when_every_post_has_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    took, said = watch(monkeypatch, [3.0, 8.0, 12.0])
    assert took == 12.0
    assert "time is up" not in said


def test_posts_still_settling_late_are_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded machine: posts settle one every 20 s, long after the scenario's 20 s.
    late = [demo.DURATION_S + 20.0 * n for n in range(1, 5)]
    took, said = watch(monkeypatch, late)
    assert took == late[-1]
    assert "time is up" not in said


def test_the_watch_gives_up_after_a_quiet_spell(monkeypatch: pytest.MonkeyPatch) -> None:
    never = float("inf")
    took, said = watch(monkeypatch, [2.0, never])
    assert took == demo.DURATION_S + demo.QUIET_S
    assert "time is up" in said


def test_the_watch_gives_up_at_its_longest_however_posts_trickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trickle = [demo.DURATION_S + 10.0 * n for n in range(1, 30)]
    took, said = watch(monkeypatch, trickle)
    assert took == demo.DURATION_S + demo.LONGEST_S
    assert "time is up" in said
