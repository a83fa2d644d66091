"""Alert rules, the alerts they raise, their notification outbox and groups, and silences.

An :class:`Alert` row is one occurrence of a rule's condition for one identity (the rule and
its labels, hashed into ``fingerprint``): it opens as ``pending`` or ``firing`` and closes as
``resolved``. At most one row per fingerprint is open at a time (a partial unique index), so
two evaluators can never open the same alert twice.
"""

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
    RECOVERING = "recovering"  # the condition cleared; firing on through ``keep_firing_for``
    RESOLVED = "resolved"
    NO_DATA = "no_data"
    ERROR = "error"


OPEN_ALERT_STATUSES = (
    AlertStatus.PENDING,
    AlertStatus.FIRING,
    AlertStatus.RECOVERING,
    AlertStatus.NO_DATA,
    AlertStatus.ERROR,
)
_OPEN_SQL = "status IN ('pending', 'firing', 'recovering', 'no_data', 'error')"


class StateBehaviour(enum.StrEnum):
    """What a rule does when it has too few samples or its evaluation fails (Grafana's)."""

    STATE = "state"  # open the alert in the ``no_data`` / ``error`` state (notified)
    ALERTING = "alerting"  # treat as the condition holding
    OK = "ok"  # treat as the condition not holding
    KEEP_LAST = "keep_last"  # change nothing


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the last attempt
    SUPPRESSED = "suppressed"  # silenced, inhibited, or nothing to tell this receiver


class AlertRule(UUIDPrimaryKey, Timestamps, Base):
    """A figure over a window compared with a threshold; ``workspace_id`` None = all."""

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
    keep_firing_for_s: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "alert_severity"))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Figure labels that split the rule into one alert per series (``provider``, ``queue``…).
    group_by: Mapped[list[Any]] = mapped_column(default=list)
    # Figure labels the series must carry, e.g. {"task": "herald.posts.dispatch_due"}.
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    no_data_state: Mapped[StateBehaviour] = mapped_column(
        str_enum(StateBehaviour, "alert_no_data_state"), default=StateBehaviour.OK
    )
    error_state: Mapped[StateBehaviour] = mapped_column(
        str_enum(StateBehaviour, "alert_error_state"), default=StateBehaviour.STATE
    )
    # Names of rules whose alerts this rule's firing critical alerts suppress.
    inhibits: Mapped[list[Any]] = mapped_column(default=list)
    runbook: Mapped[str] = mapped_column(Text, default="")
    receivers: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    last_evaluated_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(RedactedText)


class Alert(UUIDPrimaryKey, Timestamps, Base):
    """One occurrence of a rule's condition, identified by its fingerprint (rule + labels)."""

    __tablename__ = "alerts"
    __table_args__ = (
        # At most one open alert per fingerprint: an open alert deduplicates new evaluations.
        Index(
            "uq_alerts_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text(_OPEN_SQL),
            sqlite_where=text(_OPEN_SQL),
        ),
        Index("ix_alerts_status_severity", "status", "severity"),
        Index("ix_alerts_rule_status", "rule_id", "status"),
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
    recovering_since: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_evaluated_at: Mapped[datetime | None]
    # Bumped by every transition receivers hear about; it keys the outbox rows.
    notify_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]
    ack_note: Mapped[str | None] = mapped_column(Text)


class AlertNotification(UUIDPrimaryKey, Timestamps, Base):
    """The outbox: one row per (alert, receiver, transition), delivered with retries.

    ``transition`` is the row's unique key (``"3:firing"``: the alert's ``notify_seq`` and
    the kind), so a transition is queued once per receiver however often it is decided.
    Rows sent together share ``delivery_id`` (the id the receiver sees, stable across retries).
    """

    __tablename__ = "alert_notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "receiver", "transition"),
        Index("ix_alert_notifications_status_next", "status", "next_attempt_at"),
        Index("ix_alert_notifications_delivery", "delivery_id"),
    )

    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    receiver: Mapped[str] = mapped_column(String(200))
    transition: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default="", server_default="")
    group_key: Mapped[str] = mapped_column(String(500), default="", server_default="")
    delivery_id: Mapped[uuid.UUID | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[NotificationStatus] = mapped_column(
        str_enum(NotificationStatus, "notification_status"), default=NotificationStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(RedactedText)
    sent_at: Mapped[datetime | None]


class NotificationGroup(UUIDPrimaryKey, Base):
    """Alertmanager's notification log for one (receiver, group): when it last went out."""

    __tablename__ = "alert_notification_groups"
    __table_args__ = (UniqueConstraint("receiver", "group_key"),)

    receiver: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str] = mapped_column(String(500))
    last_sent_at: Mapped[datetime | None]


class Silence(UUIDPrimaryKey, Timestamps, Base):
    """Mutes notifications of alerts whose labels match every matcher between two instants.

    ``matchers`` is a list of ``{"name", "op", "value"}`` with Alertmanager's operators
    (``=``, ``!=``, ``=~``, ``!~``).
    """

    __tablename__ = "silences"

    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    matchers: Mapped[list[Any]] = mapped_column(default=list)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
