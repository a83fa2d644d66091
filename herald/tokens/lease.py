"""The refresh lease: one refresh of an integration at a time, across threads and processes,
on Postgres and on SQLite alike.

The lease is two columns of the integration row (``refresh_lease_owner``,
``refresh_lease_until``). A refresh claims it with one conditional UPDATE — "make me the owner
where no live owner holds it" — and commits before it calls the network. The database
serialises those UPDATEs (a row lock on Postgres, re-checked after the winner commits; the
single writer lock on SQLite), so of N refreshes racing, exactly one sees its UPDATE match.
That is why this is not ``SELECT … FOR UPDATE``: SQLite compiles that to a plain SELECT, and on
Postgres it would hold a transaction open across the network call.

A lease ends when its owner releases it, or by itself at ``refresh_lease_until``
(``HERALD_TOKEN_REFRESH_LEASE_S``, longer than any task may run), so a refresh worker that died
cannot hold an integration for ever. A lease without an owner is *pending*: a publish whose
token was refused asked for a refresh (``herald.models.request_refresh``), and the refresh sent
for it (or its retry) may claim it. While any lease is live, the dispatcher leaves the
integration's posts alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from herald.models import Integration, utcnow
from herald.models.integration import HEALTHY


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        Integration.refresh_lease_owner.is_(None),
        Integration.refresh_lease_until.is_(None),
        Integration.refresh_lease_until <= now,
    )


def claim(session: Session, integration_id: uuid.UUID, owner: str, *, lease_s: float) -> bool:
    """Take the lease for ``owner`` if nobody live holds it (and the integration is healthy);
    committed before returning, so the claim is visible to every other worker at once."""
    now = utcnow()
    result = session.execute(
        update(Integration)
        .where(Integration.id == integration_id, Integration.status.in_(HEALTHY), _claimable(now))
        .values(refresh_lease_owner=owner, refresh_lease_until=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def release(session: Session, integration_id: uuid.UUID, owner: str) -> None:
    """End ``owner``'s lease (in the caller's transaction); someone else's is left alone."""
    _set(session, integration_id, owner, refresh_lease_owner=None, refresh_lease_until=None)


def hold(session: Session, integration_id: uuid.UUID, owner: str, *, until: datetime) -> None:
    """Keep ``owner``'s lease until ``until``: nobody refreshes, and the posts wait."""
    _set(session, integration_id, owner, refresh_lease_until=until)


def leave_pending(
    session: Session, integration_id: uuid.UUID, owner: str, *, until: datetime
) -> None:
    """Hand ``owner``'s lease back as pending until ``until``: the posts keep waiting, and the
    next refresh (this one's retry) may claim it."""
    _set(session, integration_id, owner, refresh_lease_owner=None, refresh_lease_until=until)


def _set(session: Session, integration_id: uuid.UUID, owner: str, **values: object) -> None:
    session.execute(
        update(Integration)
        .where(Integration.id == integration_id, Integration.refresh_lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
