"""Signatures of the generic webhook: HMAC-SHA256 over the timestamp, delivery id and body.

Every request carries::

    X-Herald-Delivery:  the delivery's id (the same on every retry of that delivery)
    X-Herald-Timestamp: seconds since the epoch when this try was signed
    X-Herald-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<delivery>." + body)>

A receiver recomputes the signature over the raw body, compares it in constant time, refuses
a timestamp more than five minutes from its clock, and remembers the delivery ids it accepted
inside that window: a replayed request is either stale or a delivery it already has.
:func:`verify` is that check (docs/alerts.md shows it standalone).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SCHEME = "v1"
TOLERANCE_S = 300


class SignatureInvalid(ValueError):
    pass


def signature(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    message = f"{timestamp}.{delivery_id}.".encode() + body
    return f"{SCHEME}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, delivery_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` for one try of delivery ``delivery_id``."""
    timestamp = int(now if now is not None else time.time())
    return {
        "X-Herald-Delivery": delivery_id,
        "X-Herald-Timestamp": str(timestamp),
        "X-Herald-Signature": signature(secret, timestamp, delivery_id, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """The delivery id of a correctly signed, fresh request, else :class:`SignatureInvalid`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        delivery = lowered["x-herald-delivery"]
        timestamp = int(lowered["x-herald-timestamp"])
        given = lowered["x-herald-signature"]
    except (KeyError, ValueError):
        raise SignatureInvalid("missing or malformed signature headers") from None
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise SignatureInvalid("timestamp outside the tolerance: stale or replayed")
    if not hmac.compare_digest(given, signature(secret, timestamp, delivery, body)):
        raise SignatureInvalid("signature does not match")
    return delivery
