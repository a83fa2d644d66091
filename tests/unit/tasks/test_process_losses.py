"""The worker's count of each message's lost pool processes (herald.tasks.base.RecentCounts)."""

from __future__ import annotations

from herald.tasks.base import RecentCounts


def test_losses_are_counted_per_message() -> None:
    losses = RecentCounts()
    assert [losses.note("a"), losses.note("b"), losses.note("a"), losses.note("a")] == [1, 1, 2, 3]


def test_only_the_most_recently_lost_messages_are_remembered() -> None:
    losses = RecentCounts(size=2)
    losses.note("old")
    losses.note("kept")
    losses.note("kept")  # a new loss makes a message recent again
    losses.note("new")  # forgets "old", the least recently lost
    assert losses.note("kept") == 3
    assert losses.note("old") == 1
