"""What every network's error classification honours, whatever the body of the answer says.

The "any answer maps to exactly one class" properties check these, not only that the result is
a taxonomy class (which the return type already says).
"""

from __future__ import annotations

from herald.providers.base import (
    ERROR_CLASSES,
    AmbiguousOutcome,
    ProviderError,
    RateLimited,
    TransientError,
)


def assert_classified(error: ProviderError, status: int, *, write_may_duplicate: bool) -> None:
    """``error`` is the classification of an HTTP ``status`` answer.

    - it is exactly one class of the taxonomy and keeps the status;
    - a 429 is a rate limit with a time-zone-aware reset;
    - a refusal (4xx other than 408 and 429) is never retried as if it might pass next time,
      nor taken for an outcome that might have been applied;
    - when a resend could post twice (``write_may_duplicate``), a 5xx other than 503 (the one
      that says the request was not taken) is never a plain transient error: the post may exist.
    """
    assert type(error) in ERROR_CLASSES
    assert error.http_status == status
    assert str(error)
    if status == 429:
        assert isinstance(error, RateLimited), error
        assert error.reset_at.tzinfo is not None
    if 400 <= status < 500 and status not in (408, 429):
        assert not isinstance(error, TransientError | AmbiguousOutcome), (status, error)
    if write_may_duplicate and status >= 500 and status != 503:
        assert not isinstance(error, TransientError), (status, error)
