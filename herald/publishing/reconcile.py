"""Decide what happened to a post whose outcome at the network is unknown.

Used after an ambiguous answer (timeout after sending, connection reset, 5xx to a write) and
by the sweep for posts whose worker died mid-call. The rule: never post twice. The adapter's
lookup (:meth:`~herald.providers.base.Provider.find_post`) answers one of three things:

- :class:`~herald.providers.base.Found` → the post is published;
- :class:`~herald.providers.base.Absent` → the network proved it is not there (the whole
  window since the attempt began was read, or the client-chosen key is free): safe to send
  again;
- :class:`~herald.providers.base.Unknown`, or a lookup that failed → a person must look
  (``needs_review``). Nothing short of proof of absence ever leads to a second send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from herald.models import Integration, Post
from herald.providers.base import (
    Absent,
    Found,
    Provider,
    ProviderError,
    PublishResult,
    Unknown,
)
from herald.publishing.scheduling import draft_of
from herald.security.credentials import account_of, open_tokens
from herald.security.crypto import DecryptionError, KeyRing

log = structlog.get_logger("herald.publishing")
# Clocks differ: look a little before the attempt started.
_CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``found`` when the post is at the network; else ``safe_to_retry`` only when its absence
    was proven. ``reason`` says why, for the post's last error and the operator."""

    found: PublishResult | None
    safe_to_retry: bool
    reason: str
    # The lookup itself failed (the network did not answer it): asking again later may settle
    # what this verdict could not. The sweep does; a publish run has no later.
    lookup_failed: bool = False


def reconcile(
    provider: Provider, post: Post, integration: Integration, keys: KeyRing, *, since: datetime
) -> Verdict:
    since = since - _CLOCK_SKEW
    network = integration.provider
    try:
        lookup = provider.find_post(
            draft_of(post), account_of(integration), open_tokens(integration, keys), since
        )
    except (ProviderError, DecryptionError) as exc:
        log.warning("reconcile.lookup_failed", post_id=str(post.id), error=str(exc))
        reason = f"absence at {network} cannot be proven: the lookup failed ({exc})"
        return Verdict(None, False, reason, lookup_failed=True)
    match lookup:
        case Found(remote):
            log.info("reconcile.found", post_id=str(post.id), external_id=remote.external_id)
            return Verdict(PublishResult(remote.external_id, remote.url), False, "found")
        case Absent(evidence):
            log.info("reconcile.absent", post_id=str(post.id), evidence=evidence)
            return Verdict(None, True, f"not at {network}: {evidence}")
        case Unknown(reason):
            log.warning("reconcile.unknown", post_id=str(post.id), reason=reason)
            return Verdict(None, False, f"absence at {network} cannot be proven: {reason}")
