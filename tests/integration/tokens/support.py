"""Helpers for the token tests: polling with a deadline, counting token calls at the sandbox,
and the rows a refresh leaves behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from herald.models import Integration, IntegrationStatus, Post, TokenRefreshAttempt, utcnow
from herald.sandbox import SandboxClient
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import fresh

#: The path of each network's token (refresh) endpoint, as the sandbox journals it.
TOKEN_PATHS = {
    "x": "/2/oauth2/token",
    "linkedin": "/oauth/v2/accessToken",
    "reddit": "/api/v1/access_token",
    "discord": "/oauth2/token",
}


def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail naming ``what``."""
    return eventually(predicate, timeout, what)


def token_calls(sandbox: SandboxClient, network: str) -> list[dict[str, Any]]:
    """Every request that reached the network's token endpoint."""
    return [r for r in sandbox.requests(network) if r["path"] == TOKEN_PATHS[network]]


def revoked_tokens(sandbox: SandboxClient, network: str, account_id: str) -> list[dict[str, Any]]:
    return [t for t in sandbox.tokens(network, account_id) if t["revoked"]]


def refresh_attempts(integration_id: uuid.UUID) -> list[TokenRefreshAttempt]:
    with service_session() as s:
        return list(
            s.scalars(
                select(TokenRefreshAttempt)
                .where(TokenRefreshAttempt.integration_id == integration_id)
                .order_by(TokenRefreshAttempt.started_at)
            )
        )


def outcomes(integration_id: uuid.UUID) -> list[str | None]:
    return sorted(a.outcome for a in refresh_attempts(integration_id) if a.outcome)


def wait_for_auth(post_id: uuid.UUID, *, minutes: int = 10) -> None:
    """Put a post where a publish leaves it after its token was refused: ``retrying``, waiting."""
    with service_session() as s:
        s.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(
                status="retrying",
                attempts=1,
                last_error_code="auth_expired",
                next_attempt_at=utcnow() + timedelta(minutes=minutes),
            )
        )


def set_integration(integration_id: uuid.UUID, **values: Any) -> None:
    with service_session() as s:
        s.execute(update(Integration).where(Integration.id == integration_id).values(**values))


def assert_one_refresh(sandbox: SandboxClient, integration: Integration, count: int) -> None:
    after = fresh(Integration, integration.id)
    assert len(token_calls(sandbox, "x")) == 1
    assert revoked_tokens(sandbox, "x", integration.external_account_id) == []
    assert after.token_version == integration.token_version + 1
    assert after.status is IntegrationStatus.ACTIVE
    assert after.refresh_lease_owner is None
    assert after.refresh_lease_until is None
    assert outcomes(integration.id) == ["lost_race"] * (count - 1) + ["refreshed"]
