"""Alert rules, the alerts they raise, their notification outbox, and silences."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from herald.models.base import (
    Base,
    RedactedText,
    Timestamps,
    UUIDPrimaryKey,
    str_enum,
    utcnow,
)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    NO_DATA = "no_data"
    ERROR = "error"


OPEN_ALERT_STATUSES = (AlertStatus.PENDING, AlertStatus.FIRING, AlertStatus.NO_DATA)


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class AlertRule(UUIDPrimaryKey, Timestamps, Base):
    """A metric expression over a window compared with a threshold; ``workspace_id`` None = all."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    metric: Mapped[str] = mapped_column(String(100))
    window_s: Mapped[int] = mapped_column(Integer, default=3600)
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    min_samples: Mapped[int] = mapped_column(Integer, default=0)
    for_s: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "alert_severity"))
    receivers: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Alert(UUIDPrimaryKey, Timestamps, Base):
    """One occurrence of a rule's condition, identified by its fingerprint (rule + labels)."""

    __tablename__ = "alerts"
    __table_args__ = (
        # At most one open alert per fingerprint: an open alert deduplicates new evaluations.
        Index(
            "uq_alerts_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text("status IN ('pending', 'firing', 'no_data')"),
            sqlite_where=text("status IN ('pending', 'firing', 'no_data')"),
        ),
        Index("ix_alerts_status_severity", "status", "severity"),
    )

    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[AlertStatus] = mapped_column(str_enum(AlertStatus, "alert_status"))
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "alert_severity"))
    value: Mapped[float | None] = mapped_column(Float)
    summary: Mapped[str] = mapped_column(Text, default="")
    pending_since: Mapped[datetime] = mapped_column(default=utcnow)
    fired_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_evaluated_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]
    ack_note: Mapped[str | None] = mapped_column(Text)


class AlertNotification(UUIDPrimaryKey, Timestamps, Base):
    """The outbox: one row per (alert, receiver, transition), delivered with retries."""

    __tablename__ = "alert_notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "receiver", "transition"),
        Index("ix_alert_notifications_status_next", "status", "next_attempt_at"),
    )

    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    receiver: Mapped[str] = mapped_column(String(200))
    transition: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[NotificationStatus] = mapped_column(
        str_enum(NotificationStatus, "notification_status"), default=NotificationStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(RedactedText)
    sent_at: Mapped[datetime | None]


class Silence(UUIDPrimaryKey, Timestamps, Base):
    """Mutes notifications of alerts whose labels match ``matchers`` between two instants."""

    __tablename__ = "silences"

    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    matchers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
