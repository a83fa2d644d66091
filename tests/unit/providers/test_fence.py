"""The claim's lease (herald/providers/fence.py): a write may begin while it holds, not after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.providers import fence
from herald.settings import CLOCK_SKEW_ALLOWANCE_S, Settings


def settings() -> Settings:
    return Settings(
        env="test",
        provider_connect_timeout_s=5.0,
        provider_timeout_s=15.0,
        publishing_timeout_s=600.0,
    )


def test_the_lease_ends_one_call_before_the_sweep_may_take_the_post_on_a_clock_ahead() -> None:
    assert fence.lease_s(settings()) == 600.0 - CLOCK_SKEW_ALLOWANCE_S - 20.0


def test_a_write_may_begin_while_the_lease_holds() -> None:
    claimed = datetime.now(UTC) - timedelta(seconds=fence.lease_s(settings()) - 60)
    with fence.lease(claimed, settings()):
        fence.check()


def test_a_write_after_the_lease_is_refused_with_how_late_it_is() -> None:
    claimed = datetime.now(UTC) - timedelta(seconds=fence.lease_s(settings()) + 42)
    with fence.lease(claimed, settings()), pytest.raises(fence.ClaimExpired) as refused:
        fence.check()
    assert 41 < refused.value.late_s < 60
    assert "was not sent" in str(refused.value)


def test_outside_a_lease_nothing_is_checked() -> None:
    claimed = datetime.now(UTC) - timedelta(days=1)
    with fence.lease(claimed, settings()):
        pass
    fence.check()  # the lease ended with its block: the sweep's and others' calls go out


def test_a_claim_stamped_ahead_of_this_clock_gets_no_longer_than_the_lease() -> None:
    """A wall clock stepped back after the claim: the boot clock still ends the lease on time."""
    claimed = datetime.now(UTC) + timedelta(hours=1)
    with fence.lease(claimed, settings()):
        held = fence._lease.get()
        assert held is not None
        assert held.boot_ends - fence._boot_clock() <= fence.lease_s(settings())


def test_a_lapse_says_whether_an_earlier_write_of_the_run_went_out() -> None:
    with fence.lease(datetime.now(UTC), settings()):
        fence.check()  # the first write leaves in time
        held = fence._lease.get()
        assert held is not None
        held.wall_ends -= fence.lease_s(settings()) + 1  # as if paused since
        with pytest.raises(fence.ClaimExpired) as refused:
            fence.check()
    assert refused.value.after_writes
    assert "an earlier request of this attempt went out" in str(refused.value)
    lapsed = datetime.now(UTC) - timedelta(seconds=fence.lease_s(settings()) + 1)
    with fence.lease(lapsed, settings()), pytest.raises(fence.ClaimExpired) as first:
        fence.check()
    assert not first.value.after_writes
