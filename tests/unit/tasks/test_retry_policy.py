"""RetryPolicy's countdown stays inside its bounds for every retry number."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald.tasks.base import RetryPolicy


@given(
    retries=st.integers(min_value=0, max_value=60),
    backoff=st.floats(min_value=0.01, max_value=60),
    ceiling=st.floats(min_value=0.01, max_value=3600),
)
def test_jittered_countdown_is_between_half_the_base_and_the_capped_exponential(
    retries: int, backoff: float, ceiling: float
) -> None:
    policy = RetryPolicy(backoff_s=backoff, backoff_max_s=max(ceiling, backoff))
    bound = min(policy.backoff_max_s, backoff * 2**retries)
    assert backoff / 2 <= policy.countdown(retries) <= bound


@given(retries=st.integers(min_value=0, max_value=60))
def test_countdown_without_jitter_is_the_capped_exponential(retries: int) -> None:
    policy = RetryPolicy(backoff_s=2.0, backoff_max_s=300.0, jitter=False)
    assert policy.countdown(retries) == min(300.0, 2.0 * 2**retries)


def test_a_retry_count_from_a_message_header_cannot_make_the_countdown_unbounded_work() -> None:
    # ``retries`` is the message's own header: 2 ** 10**30 would never finish.
    policy = RetryPolicy(backoff_s=2.0, backoff_max_s=300.0, jitter=False)
    assert policy.countdown(10**30) == 300.0
    assert policy.countdown(-5) == 2.0
