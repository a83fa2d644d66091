"""Messages Herald refused before or instead of running them, kept so none is lost.

Two kinds arrive here: a payload a task refused (malformed, an unknown field, a post that
cannot be honoured), and a broker message no task could be made of (undecodable bytes, a
content type other than JSON, an unknown task name, a broken envelope or header). Both are
written by :func:`herald.broker.dead_letters.record_dead_letter`.

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
    # Whatever identity could be read: a message that is not a task message has none.
    task_name: Mapped[str | None] = mapped_column(String(200), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    # The queue the message was taken from (broker refusals; None for a refused payload).
    queue: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(RedactedText)
    # The payload as received, secrets redacted and size capped.
    payload: Mapped[dict[str, Any]] = mapped_column(RedactedJSON, default=dict)
    # The message's bytes as received (broker refusals): redacted, size capped, and with NUL
    # and undecodable bytes written as \x.. escapes, so any bytes can be stored and read.
    raw: Mapped[str | None] = mapped_column(RedactedText)

    @validates("task_name", "task_id", "correlation_id", "queue", "reason", "payload", "raw")
    def _storable(self, _: str, value: Any) -> Any:
        return scrub_unstorable(value)
