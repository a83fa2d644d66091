"""Error messages are stored and served without the secrets a network quoted back.

Networks' error bodies sometimes echo the request (its ``Authorization`` header, its query
string with ``access_token``, the refresh token in the form). The sandbox's ``echo`` fault
does exactly that; nothing of it may reach a row or an API answer.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Text, insert, select

from herald.api import create_app
from herald.models import (
    Base,
    DeadLetter,
    Post,
    PostStatus,
    PublishAttempt,
    TokenRefreshAttempt,
    transition,
)
from herald.models.base import RedactedText
from herald.redaction import REDACTED
from herald.sandbox import SandboxClient, SandboxServer
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.refresh import refresh_integration
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.fixtures.sandbox import issued_tokens
from tests.integration.api.conftest import member_headers
from tests.integration.publishing.test_publish_outcomes import attempts_of, run_publish


def test_a_networks_error_quoting_the_token_is_stored_and_served_redacted(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("mastodon", token_prefix="CANARY-")
    post = new_post(integration, content="echo, echo")
    sandbox.inject(
        "mastodon", "error", status=422, echo=True, message="Unprocessable", method="POST", times=1
    )

    assert run_publish(post, pub_settings, keys).status is PostStatus.FAILED

    (token,) = issued_tokens(sandbox_server, "mastodon")
    stored = fresh(Post, post.id)
    (attempt,) = attempts_of(post)
    for message in (stored.last_error_message, attempt.error_message):
        assert message is not None
        assert message.startswith("Unprocessable: POST /mastodon/api/v1/statuses")
        assert token not in message
        assert f"Authorization: {REDACTED}" in message

    with TestClient(create_app(pub_settings)) as client:
        answer = client.get(
            f"/api/postiz/posts/{post.id}", headers=member_headers(integration.workspace_id)
        )
    assert answer.status_code == 200
    detail = answer.json()
    assert detail["last_error"]["message"] == stored.last_error_message
    assert detail["attempts"][0]["error_message"] == attempt.error_message
    assert token not in answer.text


def test_a_refresh_error_quoting_the_refresh_token_is_stored_redacted(
    connect: ConnectFn,
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect("x", token_prefix="CANARY-")
    sandbox.inject("x", "error", status=400, echo=True, path="oauth2/token", times=1)

    with service_session() as s:
        outcome = refresh_integration(s, integration.id, pub_settings, keys)

    assert outcome.outcome == "invalid_grant", outcome
    with service_session() as s:
        attempt = s.scalars(select(TokenRefreshAttempt)).one()
        message = attempt.error_message
    assert message is not None
    assert "POST /x/2/oauth2/token" in message
    for token in issued_tokens(sandbox_server, "x"):
        assert token not in message
    assert f"refresh_token={REDACTED}" in message


def test_every_error_text_column_redacts_whatever_code_path_writes_it(
    connect: ConnectFn, new_post: Callable[..., Post]
) -> None:
    """The guard is the column type, so a future code path cannot store a secret either:
    every text column whose name says it holds an error or a reason is ``RedactedText``,
    and a Core UPDATE or INSERT that bypasses the ORM is redacted too."""
    error_columns = [
        column
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Text | RedactedText)
        and any(word in column.name for word in ("error", "reason"))
    ]
    assert error_columns
    assert [c for c in error_columns if not isinstance(c.type, RedactedText)] == []

    secret = "Authorization: Bearer sk-live-0123456789abcdef"
    post = new_post(connect("mastodon"), status=PostStatus.QUEUED)
    with service_session() as s:
        assert transition(
            s, post.id, from_=PostStatus.QUEUED, to=PostStatus.FAILED, last_error_message=secret
        )
        s.execute(insert(DeadLetter).values(task_name="t", reason=secret, payload={"note": secret}))
        s.execute(
            insert(PublishAttempt).values(
                workspace_id=post.workspace_id,
                post_id=post.id,
                provider="mastodon",
                attempt_number=1,
                error_message=secret,
            )
        )
    redacted = f"Authorization: {REDACTED}"
    assert fresh(Post, post.id).last_error_message == redacted
    with service_session() as s:
        letter = s.scalars(select(DeadLetter)).one()
        assert (letter.reason, letter.payload) == (redacted, {"note": redacted})
        assert s.scalars(select(PublishAttempt.error_message)).all() == [redacted]
