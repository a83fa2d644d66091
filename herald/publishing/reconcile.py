"""Decide what happened to a post whose outcome at the network is unknown.

Used after an ambiguous answer (timeout after sending, connection reset, 5xx to a write) and
by the sweep for posts whose worker died mid-call. The rule: never post twice. Found at the
network → published. Not found, and the network can say so with authority (it lets us read
back what the account posted) or de-duplicates repeats itself (idempotency key, nonce,
client-chosen record key) → safe to send again. Otherwise → a person must look.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from herald.models import Integration, Post
from herald.providers.base import Provider, ProviderError, PublishResult
from herald.publishing.scheduling import draft_of
from herald.security.credentials import account_of, open_tokens
from herald.security.crypto import DecryptionError, KeyRing

log = structlog.get_logger("herald.publishing")
# Clocks differ: look a little before the attempt started.
_CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Verdict:
    found: PublishResult | None
    safe_to_retry: bool
    reason: str
    # The lookup itself failed (the network did not answer it): asking again later may settle
    # what this verdict could not. The sweep does; a publish run has no later.
    lookup_failed: bool = False


def reconcile(
    provider: Provider, post: Post, integration: Integration, keys: KeyRing, *, since: datetime
) -> Verdict:
    try:
        remote = provider.find_post(
            draft_of(post),
            account_of(integration),
            open_tokens(integration, keys),
            since - _CLOCK_SKEW,
        )
    except (ProviderError, DecryptionError) as exc:
        log.warning("reconcile.lookup_failed", post_id=str(post.id), error=str(exc))
        return Verdict(
            None, False, f"the lookup at {integration.provider} failed ({exc})", lookup_failed=True
        )
    if remote is not None:
        log.info("reconcile.found", post_id=str(post.id), external_id=remote.external_id)
        return Verdict(PublishResult(remote.external_id, remote.url), False, "found")
    if provider.reconciles:
        return Verdict(None, True, "not found at the network")
    if provider.idempotency != "none":
        return Verdict(None, True, f"the network de-duplicates by {provider.idempotency}")
    return Verdict(None, False, f"{integration.provider} offers no way to confirm the outcome")
