"""Beat's refresh_expiring and the refresh task, on a real worker against the sandbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from herald.models import Integration, TokenRefreshAttempt, utcnow
from herald.sandbox import SandboxClient
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.fixtures.publishing import ConnectFn, fresh


def _expire_soon(
    integration: Integration, *, provider: str | None = None, minutes: int = 5
) -> None:
    values: dict[str, Any] = {"token_expires_at": utcnow() + timedelta(minutes=minutes)}
    if provider:
        values["provider"] = provider
    with service_session() as s:
        s.execute(
            Integration.__table__.update().where(Integration.id == integration.id).values(**values)
        )


def test_tokens_expiring_inside_the_margin_are_refreshed_and_rotated(
    process_settings: Settings,
    worker: Any,
    connect: ConnectFn,
    sandbox: SandboxClient,
    celery_app: Any,
) -> None:
    due = connect("x")
    later = connect("x")
    never = connect("mastodon")  # Mastodon tokens do not expire or refresh
    unknown = connect("reddit")
    _expire_soon(due)
    _expire_soon(later, minutes=24 * 60)
    _expire_soon(never)
    _expire_soon(unknown, provider="myspace")
    before = sandbox.tokens("x", due.external_account_id)

    celery_app.send_task("herald.tokens.refresh_expiring")
    refreshed = eventually(
        lambda: fresh(Integration, due.id),
        what="the due integration's refresh",
        until=lambda integration: integration.token_version != 1,
    )
    assert refreshed.token_version == 2
    assert refreshed.token_expires_at > utcnow() + timedelta(hours=1)
    assert refreshed.refresh_token_ciphertext != due.refresh_token_ciphertext  # rotated
    assert fresh(Integration, later.id).token_version == 1
    assert fresh(Integration, never.id).token_version == 1
    with service_session() as s:
        attempts = list(s.scalars(select(TokenRefreshAttempt)))
    assert [(a.integration_id, a.outcome) for a in attempts] == [(due.id, "refreshed")]
    assert attempts[0].token_version_before == 1
    assert attempts[0].token_version_after == 2
    after = sandbox.tokens("x", due.external_account_id)
    assert len(after) > len(before)  # the sandbox issued the new pair
