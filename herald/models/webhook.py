"""Integrators' webhooks: a workspace's subscriptions and the outbox of their deliveries.

:func:`record_event` writes one ``webhook_deliveries`` row per subscription that listens to
the event, in the caller's transaction: the row commits with the status change it reports
(a post published, an integration that needs its user) or not at all. ``herald.webhooks``
delivers the outbox; a delivery's id is the ``X-Herald-Delivery`` header, the same on every
retry, so a receiver drops repeats.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

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

EVENTS = (
    "post.published",
    "post.failed",
    "post.needs_review",
    "integration.needs_reauth",
    "integration.reconnected",
)


class SubscriptionStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # kept failing: nothing is queued for it until it is resumed


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # given up after every retry, or its subscription was paused


class WebhookSubscription(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "webhook_subscriptions"
    __table_args__ = (keyed_by_workspace(),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    events: Mapped[list[Any]] = mapped_column(default=list)
    #: The HMAC-SHA256 key, sealed like a token (herald.security.crypto).
    secret_ciphertext: Mapped[str] = mapped_column(String(500))
    status: Mapped[SubscriptionStatus] = mapped_column(
        str_enum(SubscriptionStatus, "webhook_subscription_status"),
        default=SubscriptionStatus.ACTIVE,
    )
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_at: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(RedactedText)


class WebhookDelivery(UUIDPrimaryKey, Base):
    """One event for one subscription; its id is the delivery id receivers deduplicate on."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "created_at"),
        in_workspace("subscription_id", "webhook_subscriptions", ondelete="CASCADE"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[uuid.UUID]
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "webhook_delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(RedactedText)


def record_event(
    session: Session, workspace_id: uuid.UUID, event: str, data: dict[str, Any]
) -> list[WebhookDelivery]:
    """Queue ``event`` for every active subscription of the workspace that listens to it, in
    the caller's transaction. The body receivers get is ``{"id", "event", "created_at",
    "workspace_id", "data"}``; ``id`` is the delivery's."""
    assert event in EVENTS, event
    subscriptions = session.execute(
        select(WebhookSubscription.id, WebhookSubscription.events).where(
            WebhookSubscription.workspace_id == workspace_id,
            WebhookSubscription.status == SubscriptionStatus.ACTIVE,
        )
    ).all()
    now = utcnow()
    body = event_body(event, workspace_id, data, now)
    rows = []
    for subscription_id, events in subscriptions:
        if event not in (events or ()):
            continue
        delivery_id = uuid.uuid4()
        rows.append(
            WebhookDelivery(
                id=delivery_id,
                workspace_id=workspace_id,
                subscription_id=subscription_id,
                event=event,
                payload={"id": str(delivery_id), **body},
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
        )
    session.add_all(rows)
    if rows:
        session.flush()
    return rows


def event_body(
    event: str, workspace_id: uuid.UUID, data: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The body of a delivery of ``event`` without its ``id`` (each delivery's own)."""
    assert event in EVENTS, event
    return {
        "event": event,
        "created_at": now.isoformat(),
        "workspace_id": str(workspace_id),
        "data": data,
    }
