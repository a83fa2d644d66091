"""OAuth 2 mechanics every adapter shares: the PKCE pair (RFC 7636, S256), from a maintained
library (authlib) rather than by hand, and the expiry a token answer's ``expires_in`` gives
(RFC 6749 §5.1). The networks' token endpoints and their error shapes stay in each adapter,
which knows them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

#: RFC 7636 allows 43 to 128 characters; 64 of authlib's alphabet carry about 380 bits.
VERIFIER_LENGTH = 64


def pkce_pair() -> tuple[str, str]:
    """A fresh (code verifier, S256 code challenge) pair."""
    verifier = generate_token(VERIFIER_LENGTH)
    return verifier, create_s256_code_challenge(verifier)


#: The longest lifetime a token answer may give: past it (a broken or hostile endpoint's
#: ``10**14``, ``1e400``) the expiry is unknown, rather than a date no ``datetime`` holds.
MAX_LIFETIME_S = 10 * 366 * 86_400


def token_expiry(expires_in: Any, now: datetime | None = None) -> datetime | None:
    """When a token expires whose answer said ``expires_in``: None (unknown) unless it is a
    number of seconds — an integer, a float, or a numeric string as some networks send — above
    0 and at most :data:`MAX_LIFETIME_S`. Never raises: the answer may carry a refresh token
    the network has just rotated, which must be stored whatever else the answer says."""
    if isinstance(expires_in, bool):
        return None
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in)
        except ValueError:
            return None
    if not isinstance(expires_in, int | float):
        return None
    if isinstance(expires_in, float) and not math.isfinite(expires_in):
        return None
    if not 0 < expires_in <= MAX_LIFETIME_S:
        return None
    return (now or datetime.now(UTC)) + timedelta(seconds=expires_in)
