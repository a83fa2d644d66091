"""A workspace's webhook subscriptions: create (the signing secret is shown once, stored
sealed), list, delete, resume a paused one. The API and the CLI call these."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from herald.models import SubscriptionStatus, WebhookSubscription
from herald.security.crypto import KeyRing, TokenBinding
from herald.security.outbound import DestinationRefused, OutboundPolicy
from herald.settings import Settings

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class SubscriptionNotFound(LookupError):
    pass


class SubscriptionLimitReached(ValueError):
    """The workspace holds ``HERALD_WEBHOOK_MAX_SUBSCRIPTIONS`` already: every event fans out
    to each of them, so their number is bounded."""


@dataclass(frozen=True, slots=True)
class Created:
    subscription: WebhookSubscription
    secret: str  # shown once, to the creator


def binding(subscription_id: uuid.UUID, workspace_id: uuid.UUID) -> TokenBinding:
    return TokenBinding(workspace_id, "webhook", subscription_id)


def check_url(url: str, settings: Settings) -> None:
    """Refuse what the outbound client would refuse from the URL alone (scheme, credentials,
    private IP literals); a name resolving to a private address is refused at delivery."""
    try:
        OutboundPolicy.from_settings(settings).check_url(httpx.URL(url))
    except (DestinationRefused, httpx.InvalidURL) as exc:
        raise ValueError(str(exc)) from None


def create(
    session: Session,
    workspace_id: uuid.UUID,
    *,
    url: str,
    events: list[str],
    keys: KeyRing,
    settings: Settings,
    description: str | None = None,
    secret: str | None = None,
) -> Created:
    check_url(url, settings)
    _within_limit(session, workspace_id, settings.webhook_max_subscriptions)
    secret = secret or SECRET_PREFIX + secrets.token_urlsafe(32)
    subscription_id = uuid.uuid4()
    subscription = WebhookSubscription(
        id=subscription_id,
        workspace_id=workspace_id,
        url=url,
        description=description,
        events=sorted(set(events)),
        secret_ciphertext=keys.seal(secret, binding(subscription_id, workspace_id)),
        status=SubscriptionStatus.ACTIVE,
        consecutive_failures=0,
    )
    session.add(subscription)
    session.flush()
    return Created(subscription, secret)


def _within_limit(session: Session, workspace_id: uuid.UUID, most: int) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Two creates at once count one after the other (held to the transaction's end).
        session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"webhooks:{workspace_id}", 0)))
        )
    held = session.scalar(
        select(func.count())
        .select_from(WebhookSubscription)
        .where(WebhookSubscription.workspace_id == workspace_id)
    )
    if (held or 0) >= most:
        raise SubscriptionLimitReached(
            f"this workspace has {held} webhook subscriptions, the most it may hold "
            f"(HERALD_WEBHOOK_MAX_SUBSCRIPTIONS={most}): delete one first"
        )


def list_for(session: Session, workspace_id: uuid.UUID) -> list[WebhookSubscription]:
    return list(
        session.scalars(
            select(WebhookSubscription)
            .where(WebhookSubscription.workspace_id == workspace_id)
            .order_by(WebhookSubscription.created_at)
        )
    )


def get(
    session: Session, workspace_id: uuid.UUID, subscription_id: uuid.UUID
) -> WebhookSubscription:
    found = session.scalar(
        select(WebhookSubscription).where(
            WebhookSubscription.id == subscription_id,
            WebhookSubscription.workspace_id == workspace_id,
        )
    )
    if found is None:
        raise SubscriptionNotFound("no such webhook subscription in this workspace")
    return found


def delete(
    session: Session, workspace_id: uuid.UUID, subscription_id: uuid.UUID
) -> WebhookSubscription:
    """Remove a subscription; returns the row as it was."""
    subscription = get(session, workspace_id, subscription_id)
    session.delete(subscription)
    session.flush()
    return subscription


def resume(
    session: Session, workspace_id: uuid.UUID, subscription_id: uuid.UUID
) -> WebhookSubscription:
    """Take a paused subscription back: events are queued for it again, from now."""
    subscription = get(session, workspace_id, subscription_id)
    subscription.status = SubscriptionStatus.ACTIVE
    subscription.consecutive_failures = 0
    subscription.paused_at = None
    subscription.paused_reason = None
    session.flush()
    return subscription
