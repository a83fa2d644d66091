"""A real worker process started with ``HERALD_SANDBOX_URL`` and nothing else (but where this
run's database and broker are): token refresh works — the sandbox checks a client is named,
as the networks do — and four refreshes racing in its pool processes make one call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from herald.sandbox import SandboxClient, SandboxServer
from herald.security.crypto import KeyRing
from herald.settings import DEV_TOKEN_KEYS
from herald.tokens.connect import account_from, connect_integration, tokens_from
from tests.conftest import REDIS_URL, RUN_ID, RUNTIME_DATABASE_URL, SERVICE_DATABASE_URL
from tests.fixtures.database import service_session
from tests.fixtures.factories import make_workspace
from tests.fixtures.processes import WorkerProcess
from tests.integration.tokens.support import assert_one_refresh, refresh_attempts, until

RACERS = 4


@pytest.mark.slow
def test_a_worker_with_only_the_sandbox_url_refreshes_once_for_racing_requests(
    sandbox_server: SandboxServer,
    sandbox: SandboxClient,
    committed: Engine,
    celery_app: Any,
    tmp_path: Path,
) -> None:
    created = sandbox.create_account("x")
    with service_session() as s:
        integration = connect_integration(
            s,
            workspace_id=make_workspace(s).id,
            provider="x",
            account=account_from(created),
            tokens=tokens_from(created),
            keys=KeyRing.parse(DEV_TOKEN_KEYS),  # the worker's default key ring
        )
    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    env |= {
        "HERALD_SANDBOX_URL": sandbox_server.url,
        # Where this run's database and broker are: not part of the set-up under test.
        "HERALD_DATABASE_URL": RUNTIME_DATABASE_URL,
        "HERALD_SERVICE_DATABASE_URL": SERVICE_DATABASE_URL,
        "HERALD_BROKER_URL": REDIS_URL,
        "HERALD_BROKER_KEY_PREFIX": f"herald-test-{RUN_ID}:",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    sandbox.inject("x", "latency", ms=700, path="oauth2/token")  # the racers overlap
    log = tmp_path / "worker.log"
    worker = WorkerProcess("alone", env, "tokens", RACERS, log)
    try:
        worker.wait_ready(celery_app)
        for _ in range(RACERS):
            celery_app.send_task(
                "herald.tokens.refresh",
                kwargs={
                    "integration_id": str(integration.id),
                    "seen_token_version": integration.token_version,
                },
            )
        until(
            lambda: len([a for a in refresh_attempts(integration.id) if a.finished_at]) == RACERS,
            "every refresh to finish",
            timeout=60,
        )
    finally:
        worker.stop()

    assert_one_refresh(sandbox, integration, RACERS)
    assert "client_credentials_missing" not in log.read_text()
