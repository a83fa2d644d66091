"""Media uploaded to a network for a post, kept so it is uploaded once (docs/media.md)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base, UUIDPrimaryKey, in_workspace, utcnow


class PostMediaUpload(UUIDPrimaryKey, Base):
    """Item ``item_index`` of a post's media as uploaded to ``network``: the network's media
    id (an id, a URN, a blob reference as JSON) and when the network forgets it. A retry, a
    reconcile or a refresh-then-publish reuses it until then."""

    __tablename__ = "post_media_uploads"
    __table_args__ = (
        UniqueConstraint("post_id", "network", "item_index"),
        in_workspace("post_id", "posts", ondelete="CASCADE"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    post_id: Mapped[uuid.UUID]
    network: Mapped[str] = mapped_column(String(32))
    item_index: Mapped[int] = mapped_column(Integer)
    media_id: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
