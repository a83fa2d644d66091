"""Per-provider circuit breakers: one row per network whose circuit has ever opened.

Not a tenant table: a network that fails for everyone is everyone's state. The row is written
only by conditional UPDATEs (``WHERE state = <expected>``), so of many workers and dispatchers
racing to move one circuit exactly one wins; :mod:`herald.publishing.circuit` owns the rules.
No row means closed.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base, RedactedText, str_enum, utcnow


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class ProviderCircuit(Base):
    __tablename__ = "provider_circuits"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[CircuitState] = mapped_column(
        str_enum(CircuitState, "circuit_state"), default=CircuitState.CLOSED
    )
    opened_at: Mapped[datetime | None]
    # Open: when probing may start. Half-open: when this probe round ends (a probe that never
    # reported by then was lost, and a new round may begin).
    probe_at: Mapped[datetime | None]
    probes_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the window showed when the circuit last opened, for operators and alert rules.
    window_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_integrations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Openings since the circuit was last closed (a failed probe reopens it).
    openings: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(RedactedText)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
