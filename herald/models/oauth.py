"""Single-use OAuth states with their PKCE verifier, bound to who started the flow."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base, UUIDPrimaryKey, utcnow


class OAuthState(UUIDPrimaryKey, Base):
    __tablename__ = "oauth_states"

    # Only a hash of the state travels back to us to be compared; the state itself is not kept.
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    code_verifier_ciphertext: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    consumed_at: Mapped[datetime | None]

    @property
    def pkce(self) -> bool:
        """Whether the flow carries a PKCE verifier (the networks that take PKCE)."""
        return self.code_verifier_ciphertext is not None
