"""Re-seal every stored token under the newest key (``herald keys rotate``), and count what
each key still holds (``herald keys status``).

No downtime: the old keys stay in ``HERALD_TOKEN_KEYS`` and keep opening what they sealed while
the rotation runs, and every token it touches is written back only if its ``token_version`` is
still the one it read (a refresh that won meanwhile sealed its own tokens under the newest key
already). Batched and resumable: each batch is one short transaction, walked in id order; a
rotation stopped halfway starts again on what is left. Rows that no key opens are counted and
left alone (``herald keys status`` shows them under their key id).

OAuth states (``oauth_states.code_verifier_ciphertext``) live minutes and are not re-sealed:
they expire under the key that sealed them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from herald.models import Integration
from herald.security.credentials import binding_of
from herald.security.crypto import DecryptionError, KeyRing, key_id_of

SessionFactory = Callable[[], AbstractContextManager[Session]]
NONE = "(none)"
UNREADABLE = "(not a Herald ciphertext)"


def _key_of(ciphertext: str | None) -> str:
    if not ciphertext:
        return NONE
    try:
        return key_id_of(ciphertext)
    except DecryptionError:
        return UNREADABLE


def status(session: Session) -> Counter[str]:
    """How many token ciphertexts (access and refresh) each key id holds."""
    counts: Counter[str] = Counter()
    rows = session.execute(
        select(Integration.access_token_ciphertext, Integration.refresh_token_ciphertext)
    ).yield_per(1000)
    for access, refresh in rows:
        counts[_key_of(access)] += 1
        if refresh:
            counts[_key_of(refresh)] += 1
    return counts


def _stale(keys: KeyRing) -> ColumnElement[bool]:
    """Rows with a ciphertext not sealed under the active key (the ``v1.<kid>.`` prefix)."""
    prefix = f"v1.{keys.active}.%"
    return or_(
        ~Integration.access_token_ciphertext.like(prefix),
        (Integration.refresh_token_ciphertext.is_not(None))
        & ~Integration.refresh_token_ciphertext.like(prefix),
    )


@dataclass
class Rotation:
    resealed: int = 0
    skipped: int = 0  # changed by a refresh meanwhile: already under the newest key
    unreadable: int = 0  # no key in the ring opens it


def remaining(session: Session, keys: KeyRing) -> int:
    count = session.scalar(select(func.count()).select_from(Integration).where(_stale(keys)))
    return int(count or 0)


def rotate(
    sessions: SessionFactory,
    keys: KeyRing,
    *,
    batch: int = 200,
    progress: Callable[[int], None] = lambda _: None,
) -> Rotation:
    """Re-seal every integration's tokens under ``keys.active``; ``progress(n)`` after each
    batch of ``n`` rows."""
    done = Rotation()
    after = uuid.UUID(int=0)
    while True:
        with sessions() as session:
            rows = session.scalars(
                select(Integration)
                .where(_stale(keys), Integration.id > after)
                .order_by(Integration.id)
                .limit(batch)
            ).all()
            if not rows:
                return done
            for integration in rows:
                _reseal(session, keys, integration, done)
            after = rows[-1].id
        progress(len(rows))


def _reseal(session: Session, keys: KeyRing, integration: Integration, done: Rotation) -> None:
    binding = binding_of(integration)
    try:
        access = keys.reseal(integration.access_token_ciphertext, binding)
        refresh = integration.refresh_token_ciphertext
        refresh = keys.reseal(refresh, binding) if refresh else None
    except DecryptionError:
        done.unreadable += 1
        return
    changed = session.execute(
        update(Integration)
        .where(
            Integration.id == integration.id,
            Integration.token_version == integration.token_version,
        )
        .values(
            access_token_ciphertext=access,
            refresh_token_ciphertext=refresh,
            token_key_id=keys.active,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) == 1:
        done.resealed += 1
    else:
        done.skipped += 1
