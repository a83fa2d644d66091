"""``/api/postiz/webhooks``: a workspace's webhook subscriptions (owners and admins, and the
service role). The signing secret is answered once, when the subscription is created."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from herald.api.deps import Caller, CurrentCaller, audit_change, settings_of, tenant_session
from herald.api.errors import COMMON_RESPONSES, ApiError, ErrorEnvelope
from herald.api.paths import PREFIX
from herald.api.ratelimit import RATE_LIMITED, rate_limit
from herald.models import Role, WebhookSubscription
from herald.security.audit import EventType
from herald.security.crypto import KeyRing
from herald.webhooks import subscriptions
from herald.webhooks.subscriptions import SubscriptionLimitReached, SubscriptionNotFound

router = APIRouter(
    prefix=f"{PREFIX}/webhooks",
    tags=["webhooks"],
    responses={**COMMON_RESPONSES, **RATE_LIMITED},
    dependencies=[Depends(rate_limit)],
)

Event = Literal[
    "post.published",
    "post.failed",
    "post.needs_review",
    "integration.needs_reauth",
    "integration.reconnected",
]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://")]
    events: list[Event] = Field(min_length=1, max_length=5)
    description: str | None = Field(default=None, max_length=200, pattern=r"^[^\u0000]*$")


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    status: str
    consecutive_failures: int
    paused_at: datetime | None
    paused_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookSubscription) -> SubscriptionOut:
        return cls(
            id=row.id,
            url=row.url,
            events=list(row.events),
            description=row.description,
            status=row.status.value,
            consecutive_failures=row.consecutive_failures,
            paused_at=row.paused_at,
            paused_reason=row.paused_reason,
            created_at=row.created_at,
        )


class CreatedOut(SubscriptionOut):
    secret: str = Field(description="The HMAC-SHA256 key of the signatures: shown only now.")


def _audit(session: Session, caller: Caller, action: str, row: WebhookSubscription) -> None:
    """A subscription sends post data out of Herald: who made, removed or resumed one is
    audited, as the CLI's uses are. Its receiver by host only: a URL's path or query may be
    the receiver's own secret (a chat service's incoming-webhook URL)."""
    audit_change(
        session,
        caller,
        EventType.ADMIN_ACTION,
        action=f"webhooks.{action}",
        resource=("webhook_subscription", row.id),
        message=f"webhook subscription {action}",
        receiver_host=urlsplit(row.url).hostname,
        events=list(row.events),
    )


def _managing(caller: Caller) -> Caller:
    role = caller.principal.membership_role
    if role is not None and role not in (Role.OWNER, Role.ADMIN):
        raise ApiError(
            403, "forbidden", "webhooks are managed by the workspace's owners and admins"
        )
    return caller


@router.post(
    "",
    status_code=201,
    responses={409: {"model": ErrorEnvelope, "description": "The workspace holds the most it may"}},
)
def create_subscription(
    body: SubscriptionIn, caller: CurrentCaller, request: Request
) -> CreatedOut:
    """Subscribe a URL to events; answers the signing secret, once."""
    settings = settings_of(request)
    try:
        with tenant_session(_managing(caller)) as session:
            created = subscriptions.create(
                session,
                caller.workspace_id,
                url=body.url,
                events=list(body.events),
                description=body.description,
                keys=KeyRing.from_settings(settings),
                settings=settings,
            )
            out = SubscriptionOut.of(created.subscription)
            _audit(session, caller, "create", created.subscription)
    except SubscriptionLimitReached as exc:
        raise ApiError(409, "webhook_limit_reached", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "url_refused", str(exc)) from None
    return CreatedOut(**dict(out), secret=created.secret)


@router.get("")
def list_subscriptions(caller: CurrentCaller) -> list[SubscriptionOut]:
    with tenant_session(_managing(caller)) as session:
        return [
            SubscriptionOut.of(row) for row in subscriptions.list_for(session, caller.workspace_id)
        ]


@router.delete("/{subscription_id}", status_code=204)
def delete_subscription(subscription_id: uuid.UUID, caller: CurrentCaller) -> Response:
    try:
        with tenant_session(_managing(caller)) as session:
            removed = subscriptions.delete(session, caller.workspace_id, subscription_id)
            _audit(session, caller, "delete", removed)
    except SubscriptionNotFound as exc:
        raise ApiError(404, "webhook_not_found", str(exc)) from None
    return Response(status_code=204)


@router.post("/{subscription_id}/resume")
def resume_subscription(subscription_id: uuid.UUID, caller: CurrentCaller) -> SubscriptionOut:
    """Take back a subscription that was paused because it kept failing."""
    try:
        with tenant_session(_managing(caller)) as session:
            resumed = subscriptions.resume(session, caller.workspace_id, subscription_id)
            _audit(session, caller, "resume", resumed)
            return SubscriptionOut.of(resumed)
    except SubscriptionNotFound as exc:
        raise ApiError(404, "webhook_not_found", str(exc)) from None
