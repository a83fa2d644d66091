"""Messages Herald refused (a malformed payload, an unknown field), kept so none is lost.

A refused message may hold exactly what the database cannot store (a NUL, an unpaired
surrogate, a non-finite number): every field is made storable as it is set, whoever writes
the row, so recording a refusal cannot fail on its content.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column, validates

from herald.contracts import scrub_unstorable
from herald.models.base import Base, RedactedJSON, RedactedText, UUIDPrimaryKey, utcnow


class DeadLetter(UUIDPrimaryKey, Base):
    __tablename__ = "dead_letters"

    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    task_name: Mapped[str] = mapped_column(String(200), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    workspace_id: Mapped[uuid.UUID | None]
    reason: Mapped[str] = mapped_column(RedactedText)
    # The payload as received, secrets redacted and size capped.
    payload: Mapped[dict[str, Any]] = mapped_column(RedactedJSON, default=dict)

    @validates("task_name", "task_id", "correlation_id", "reason", "payload")
    def _storable(self, _: str, value: Any) -> Any:
        return scrub_unstorable(value)
