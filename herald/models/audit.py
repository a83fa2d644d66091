"""The security audit log: append-only rows, each hashing the one before it.

``audit_events`` is the chain (``sequence`` is its order, gap-free from 1); ``audit_chain_head``
is one row holding the last sequence and hash, locked by every append so that concurrent
writers queue up behind it. A member's personal data (IP, user agent, names) lives in
``audit_personal_data``, outside the hashed content: the chain hashes only a salted digest of
it, so erasing it leaves the chain verifiable.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import Base, RedactedText, utcnow

_BigInt = BigInteger().with_variant(Integer(), "sqlite")

#: How a row's hash is computed: 1 for rows written before the sequence and personal-data
#: split existed (their IP and user agent are in the hashed content), 2 since.
CHAIN_FORMAT = 2


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_workspace_occurred", "workspace_id", "occurred_at"),
        Index("ix_audit_events_type_occurred", "event_type", "occurred_at"),
    )

    # Insertion order. BigInteger on Postgres, INTEGER (rowid alias) on SQLite.
    id: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    # The chain order: 1, 2, 3… with no gap (taken from the chain head under its lock).
    sequence: Mapped[int] = mapped_column(_BigInt, unique=True)
    chain_format: Mapped[int] = mapped_column(SmallInteger, default=CHAIN_FORMAT)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_type: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str | None] = mapped_column(String(200))
    workspace_id: Mapped[uuid.UUID | None]
    # Format 1 only; format 2 keeps these in ``audit_personal_data``.
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # SHA-256 of the salted personal data (format 2), or None when the event carried none.
    personal_digest: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    message: Mapped[str] = mapped_column(Text, default="")


class AuditChainHead(Base):
    """The chain's tail, one row (id 1): every append locks it, so the chain never forks."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sequence: Mapped[int] = mapped_column(_BigInt)
    hash: Mapped[str] = mapped_column(String(64))


class AuditPersonalData(Base):
    """One event's personal data, kept outside the hashed content and deleted on erasure."""

    __tablename__ = "audit_personal_data"

    sequence: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=False)
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    salt: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditVerification(Base):
    """The result of one run of the chain verifier; the latest is what monitoring reads."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    verified_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ok: Mapped[bool]
    checked: Mapped[int] = mapped_column(_BigInt)
    first_break: Mapped[int | None] = mapped_column(_BigInt)
    reason: Mapped[str | None] = mapped_column(RedactedText)


class SecurityFinding(Base):
    """Something :mod:`herald.security.suspicious` found (once per kind, key and window);
    the "Suspicious activity" alert rule counts them."""

    __tablename__ = "security_findings"

    id: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    found_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    # What the finding is about (an actor, an IP, an integration), with the window it covers:
    # unique, so a detector run that sees the same burst again records nothing new.
    key: Mapped[str] = mapped_column(String(300), unique=True)
    count: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
