"""Provider connections and the history of their token refreshes.

Tokens are stored only as ciphertext (``herald.security.crypto``); ``token_key_id`` names the
key that sealed them so a key rotation can find the rows still on an old key.

``token_version`` moves on with every new token set. Every write of an integration's status
names the version it was decided on (:func:`set_status`), so a decision taken on old tokens
never overwrites what a refresh or a reconnect wrote since.

``refresh_lease_until`` / ``refresh_lease_owner`` are the refresh lease: while it is live the
dispatcher leaves the integration's posts alone, and only its owner refreshes. A lease with
no owner is *pending*: asked for (by a publish whose token was refused) and claimable by the
refresh that was sent for it. Claiming and releasing live in :mod:`herald.tokens.lease`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    or_,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from herald.models.base import (
    Base,
    RedactedText,
    Timestamps,
    UUIDPrimaryKey,
    in_workspace,
    keyed_by_workspace,
    str_enum,
    utcnow,
)


class IntegrationStatus(enum.StrEnum):
    ACTIVE = "active"
    REFRESH_NEEDED = "refresh_needed"
    NEEDS_REAUTH = "needs_reauth"
    DISABLED = "disabled"


class Integration(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("workspace_id", "provider", "external_account_id"),
        keyed_by_workspace(),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    external_account_id: Mapped[str] = mapped_column(String(200))
    handle: Mapped[str | None] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(500))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[IntegrationStatus] = mapped_column(
        str_enum(IntegrationStatus, "integration_status"), default=IntegrationStatus.ACTIVE
    )
    access_token_ciphertext: Mapped[str] = mapped_column(Text)
    refresh_token_ciphertext: Mapped[str | None] = mapped_column(Text)
    token_key_id: Mapped[str] = mapped_column(String(64))
    token_expires_at: Mapped[datetime | None]
    refresh_expires_at: Mapped[datetime | None]
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    rate_limited_until: Mapped[datetime | None]
    refresh_failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_refreshed_at: Mapped[datetime | None]
    refresh_lease_until: Mapped[datetime | None]
    refresh_lease_owner: Mapped[str | None] = mapped_column(String(64))


#: Statuses a token decision may move an integration out of (the user's own, never).
HEALTHY = (IntegrationStatus.ACTIVE, IntegrationStatus.REFRESH_NEEDED)


def set_status(
    session: Session,
    integration_id: uuid.UUID,
    to: IntegrationStatus,
    *,
    token_version: int,
    from_: tuple[IntegrationStatus, ...] = HEALTHY,
) -> bool:
    """Move the integration to ``to`` if it still holds the tokens of ``token_version`` and
    is in one of ``from_``; whether it did. A decision taken on tokens that were replaced
    since (a refresh, a reconnect) changes nothing."""
    result = session.execute(
        update(Integration)
        .where(
            Integration.id == integration_id,
            Integration.token_version == token_version,
            Integration.status.in_(from_),
        )
        .values(status=to, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def handing_over(now: datetime) -> ColumnElement[bool]:
    """An integration whose due posts the dispatcher hands over now: not cut off (disconnected,
    its workspace deleted, waiting for its user to reconnect), not paused by its network's rate
    limit, not mid-refresh (its posts wait for the new token). The dispatcher's claim and the
    monitoring's due-post figures share it: a post the dispatcher leaves waiting on purpose is
    no backlog."""
    return and_(
        Integration.status != IntegrationStatus.DISABLED,
        Integration.status != IntegrationStatus.NEEDS_REAUTH,
        or_(Integration.rate_limited_until.is_(None), Integration.rate_limited_until <= now),
        or_(Integration.refresh_lease_until.is_(None), Integration.refresh_lease_until <= now),
    )


def request_refresh(
    session: Session, integration_id: uuid.UUID, *, token_version: int, until: datetime
) -> None:
    """Record that the tokens of ``token_version`` were refused: the integration needs a
    refresh, and its posts wait (a pending lease until ``until``) for the refresh that the
    caller sends. Nothing changes when the tokens were replaced meanwhile, and a live lease
    is left to its owner."""
    set_status(
        session,
        integration_id,
        IntegrationStatus.REFRESH_NEEDED,
        token_version=token_version,
        from_=(IntegrationStatus.ACTIVE,),
    )
    now = utcnow()
    session.execute(
        update(Integration)
        .where(
            Integration.id == integration_id,
            Integration.token_version == token_version,
            or_(Integration.refresh_lease_until.is_(None), Integration.refresh_lease_until <= now),
        )
        .values(refresh_lease_until=until, refresh_lease_owner=None)
        .execution_options(synchronize_session=False)
    )


class TokenRefreshAttempt(UUIDPrimaryKey, Base):
    """One try at refreshing one integration: written before the call, finished after it."""

    __tablename__ = "token_refresh_attempts"
    __table_args__ = (
        Index("ix_token_refresh_attempts_provider_started", "provider", "started_at"),
        Index("ix_token_refresh_attempts_workspace_started", "workspace_id", "started_at"),
        Index("ix_token_refresh_attempts_integration_id", "integration_id"),
        in_workspace("integration_id", "integrations", ondelete="CASCADE"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    integration_id: Mapped[uuid.UUID]
    provider: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    latency_ms: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(RedactedText)
    token_version_before: Mapped[int] = mapped_column(Integer)
    token_version_after: Mapped[int | None] = mapped_column(Integer)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    task_id: Mapped[str | None] = mapped_column(String(64))
