"""Tokens the network rotated outlive the database going away under their write.

X, Discord and Bluesky spend the old refresh token when they issue new ones: tokens a refresh
got but could not store exist nowhere else, and the next refresh (with the spent token) cuts
the connection off. Found by a fault probe: Postgres stopped while a refresh was at the network
left X and Discord accounts ``needs_reauth``. The outage here is real: the Postgres backend
under the write of the new tokens is terminated (``pg_terminate_backend``), as in
tests/integration/publishing/test_recording.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from herald import db
from herald.contracts import StoreRefreshedTokens
from herald.models import Integration, IntegrationStatus
from herald.sandbox import SandboxClient
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.refresh import TokensNotStored, store_refreshed
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.tokens.support import refresh_attempts, revoked_tokens, token_calls
from tests.integration.tokens.test_refresh_outcomes import refresh


class TokenWriteBlips:
    """Terminates the Postgres backend under the next ``remaining`` writes of new tokens; with
    ``away`` set, from the first such write on, under every statement (the database gone)."""

    def __init__(self) -> None:
        self.remaining = 0
        self.away = False
        self._gone = False
        self._admin = create_engine(
            TEST_DATABASE_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )

    def before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self._gone and self.away:
            self._kill(conn)
            return
        if self.remaining <= 0 or not statement.startswith("UPDATE integrations SET access_token"):
            return
        self.remaining -= 1
        self._gone = True
        self._kill(conn)

    def back(self) -> None:
        self.away = self._gone = False
        self.remaining = 0

    def _kill(self, conn: Any) -> None:
        pid = conn.connection.dbapi_connection.info.backend_pid
        with self._admin.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

    def close(self) -> None:
        self._admin.dispose()


@pytest.fixture
def blips(committed: Engine) -> Iterator[TokenWriteBlips]:
    engine = db.get_service_engine()  # refreshes run in the service scope
    made = TokenWriteBlips()
    event.listen(engine, "before_cursor_execute", made.before_execute)
    yield made
    event.remove(engine, "before_cursor_execute", made.before_execute)
    made.close()


def test_a_lost_connection_under_the_new_tokens_is_written_again_not_refreshed_again(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    blips: TokenWriteBlips,
) -> None:
    integration = connect("x")
    blips.remaining = 1
    outcome = refresh(integration, pub_settings, keys)
    assert outcome.outcome == "refreshed"
    after = fresh(Integration, integration.id)
    assert after.token_version == integration.token_version + 1
    assert after.status is IntegrationStatus.ACTIVE
    assert len(token_calls(sandbox, "x")) == 1  # the network was asked once
    assert [a.outcome for a in refresh_attempts(integration.id)] == ["refreshed"]


def test_tokens_the_database_would_not_take_leave_sealed_and_are_stored_when_it_is_back(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    blips: TokenWriteBlips,
) -> None:
    integration = connect("x")
    blips.remaining, blips.away = 1, True  # gone from the write on, every statement refused
    with pytest.raises(TokensNotStored) as carried:
        refresh(integration, pub_settings, keys)
    # As the worker sends it (JSON kwargs) and the task reads it.
    deferred = StoreRefreshedTokens.model_validate(carried.value.deferred.model_dump(mode="json"))
    blips.back()
    assert fresh(Integration, integration.id).token_version == integration.token_version

    with service_session() as session:
        outcome = store_refreshed(session, deferred, pub_settings, keys)
    assert outcome.outcome == "refreshed"
    after = fresh(Integration, integration.id)
    assert after.token_version == integration.token_version + 1
    assert after.status is IntegrationStatus.ACTIVE
    assert [a.outcome for a in refresh_attempts(integration.id)] == ["refreshed"]
    stored = open_tokens(after, keys)
    message = deferred.model_dump_json()
    assert stored.refresh_token
    assert stored.access_token not in message  # sealed, never in the clear
    assert stored.refresh_token not in message
    # The stored tokens are the network's current ones: the next refresh rotates them again,
    # nothing is revoked, the connection lives.
    assert refresh(after, pub_settings, keys).outcome == "refreshed"
    assert revoked_tokens(sandbox, "x", integration.external_account_id) == []
    assert len(token_calls(sandbox, "x")) == 2

    with service_session() as session:  # handed on twice: the second finds it recorded
        assert store_refreshed(session, deferred, pub_settings, keys).outcome == "skipped"
    assert fresh(Integration, integration.id).token_version == integration.token_version + 2
    assert [a.outcome for a in refresh_attempts(integration.id)] == ["refreshed", "refreshed"]
