"""A connection that needs its user, and its return: one decision, one notification, posts
that wait instead of failing one by one, and publishing that resumes by itself.

:func:`needs_reauth` is called where a grant is found dead — a refresh answered
``invalid_grant`` and confirmed on a fresh read under the refresh lease
(:mod:`herald.tokens.refresh`), or a network without refresh tokens refused its credential
(:mod:`herald.publishing.publisher`). In the caller's transaction, and only if it is the call
that moves the integration (``set_status`` names the token version decided on, so of any
number of such calls exactly one wins):

- the integration becomes ``needs_reauth``;
- its posts waiting in ``retrying`` are marked :data:`WAITING_CODE` with no next attempt; the
  dispatcher leaves every post of a ``needs_reauth`` integration alone (scheduled ones too),
  so nothing fails and nothing is tried while the user is away;
- one notification: the ``integrations.needs_reauth`` counter (which the default rule
  "Connections need reconnecting" reads, so an alert fires) and an
  ``integration.needs_reauth`` webhook event for the workspace's subscriptions;
- one audit event (``token.refresh.failed``, outcome failure).

:func:`reconnected` is called when the user connected the account again (the OAuth callback,
via :func:`herald.tokens.connect.connect_integration`): the waiting posts become due now, with
a fresh attempt budget, and an ``integration.reconnected`` event goes out.
"""

from __future__ import annotations

import structlog
from sqlalchemy import update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from herald.models import (
    Integration,
    IntegrationStatus,
    Post,
    PostStatus,
    record_event,
    released_at,
    set_status,
    utcnow,
)
from herald.security import audit
from herald.security.audit import EventType, Outcome, Severity
from herald.telemetry import context, counters

log = structlog.get_logger("herald.tokens")

#: ``posts.last_error_code`` of a post that waits for its integration's user to reconnect.
WAITING_CODE = "integration_needs_reauth"
WAITING_MESSAGE = "the connection needs the user to reconnect it; the post waits and goes out after"
#: Codes of posts that wait for a token rather than for a time.
_WAITING_FOR_TOKEN = (WAITING_CODE, "auth_expired")
COUNTER = "integrations.needs_reauth"


def needs_reauth(
    session: Session,
    integration: Integration,
    *,
    token_version: int,
    reason: str,
    code: str,
) -> bool:
    """Mark ``integration`` ``needs_reauth`` (decided on ``token_version``) and tell everyone
    once; whether this call was the one that did it (see the module docstring)."""
    if not set_status(
        session, integration.id, IntegrationStatus.NEEDS_REAUTH, token_version=token_version
    ):
        return False
    now = utcnow()
    waiting = session.execute(
        update(Post)
        .where(Post.integration_id == integration.id, Post.status == PostStatus.RETRYING)
        .values(
            next_attempt_at=None,
            last_error_code=WAITING_CODE,
            last_error_message=WAITING_MESSAGE,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(waiting, CursorResult)
    counters.increment(session, COUNTER, workspace_id=integration.workspace_id)
    audit.record(
        session,
        EventType.TOKEN_REFRESH_FAILED,
        outcome=Outcome.FAILURE,
        severity=Severity.MEDIUM,
        workspace_id=integration.workspace_id,
        resource_type="integration",
        resource_id=str(integration.id),
        message="the network refused the connection's grant: it needs the user to reconnect",
        details={"provider": integration.provider, "code": code, "status": "needs_reauth"},
    )
    record_event(
        session,
        integration.workspace_id,
        "integration.needs_reauth",
        _integration_data(integration, "needs_reauth", error=reason, code=code),
    )
    log.warning(
        "integration.needs_reauth",
        integration_id=str(integration.id),
        provider=integration.provider,
        code=code,
        posts_waiting=waiting.rowcount,
    )
    return True


def reconnected(
    session: Session, integration: Integration, *, previous_status: IntegrationStatus | None
) -> int:
    """The user connected ``integration`` again (it is ``active`` with new tokens): make the
    posts that waited for it due now, with a fresh attempt budget, and send
    ``integration.reconnected`` when it had been cut off. Returns how many posts resume."""
    now = utcnow()
    resumed = session.execute(
        update(Post)
        .where(
            Post.integration_id == integration.id,
            Post.status == PostStatus.RETRYING,
            Post.last_error_code.in_(_WAITING_FOR_TOKEN),
        )
        .values(
            next_attempt_at=released_at(now), attempts_at_reschedule=Post.attempts, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(resumed, CursorResult)
    if previous_status is IntegrationStatus.NEEDS_REAUTH or resumed.rowcount:
        record_event(
            session,
            integration.workspace_id,
            "integration.reconnected",
            _integration_data(integration, "active", posts_resumed=resumed.rowcount),
        )
        log.info(
            "integration.reconnected",
            integration_id=str(integration.id),
            provider=integration.provider,
            posts_resumed=resumed.rowcount,
        )
    return resumed.rowcount


def _integration_data(integration: Integration, status: str, **extra: object) -> dict[str, object]:
    return {
        "integration_id": str(integration.id),
        "provider": integration.provider,
        "status": status,
        "correlation_id": context.correlation_id(),
        **extra,
    }
