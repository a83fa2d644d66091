"""Provider connections and the history of their token refreshes.

Tokens are stored only as ciphertext (``herald.security.crypto``); ``token_key_id`` names the
key that sealed them so a key rotation can find the rows still on an old key.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import (
    Base,
    RedactedText,
    Timestamps,
    UUIDPrimaryKey,
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
    __table_args__ = (UniqueConstraint("workspace_id", "provider", "external_account_id"),)

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


class TokenRefreshAttempt(UUIDPrimaryKey, Base):
    """One try at refreshing one integration: written before the call, finished after it."""

    __tablename__ = "token_refresh_attempts"
    __table_args__ = (
        Index("ix_token_refresh_attempts_provider_started", "provider", "started_at"),
        Index("ix_token_refresh_attempts_workspace_started", "workspace_id", "started_at"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
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
