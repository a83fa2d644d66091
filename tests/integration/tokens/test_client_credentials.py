"""A missing or refused OAuth client of Herald's is Herald's configuration error: loud at
start and at every refresh, never a user's disconnect; integrations stay as they are and
their posts wait."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from pydantic import SecretStr

from herald.celery_app import QUEUES
from herald.models import Integration, IntegrationStatus, Post, PostStatus, utcnow
from herald.providers.registry import forget_adapters
from herald.publishing.dispatch import claim_due_posts
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings, get_settings, use_settings
from herald.tasks.publishing import publish_signature
from herald.tokens.clients import check_at_start
from herald.tokens.refresh import refresh_integration
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.tokens.support import (
    refresh_attempts,
    revoked_tokens,
    token_calls,
    until,
)


def without_client(settings: Settings, **networks: dict[str, str]) -> Settings:
    """``settings`` with the named networks' OAuth clients replaced (empty = unset)."""
    credentials = dict(settings.provider_credentials)
    for network, fields in networks.items():
        credentials[network] = {k: SecretStr(v) for k, v in fields.items()}
    return settings.model_copy(update={"provider_credentials": credentials})


@pytest.fixture
def no_x_client(pub_settings: Settings) -> Iterator[Settings]:
    """The process runs with X's client id missing from its configuration."""
    settings = without_client(pub_settings, x={"client_id": ""})
    previous = get_settings()
    use_settings(settings)
    forget_adapters()
    yield settings
    use_settings(previous)
    forget_adapters()


def errors(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == event and line["level"] == "error"]


def test_an_x_refresh_without_client_id_leaves_the_integration_and_the_post_waiting(
    no_x_client: Settings,
    worker: Any,
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    log_lines: list[dict[str, Any]],
) -> None:
    integration = connect("x")
    post = new_post(integration)
    sandbox.expire_tokens("x", integration.external_account_id)
    with service_session() as s:
        [claimed] = claim_due_posts(s, no_x_client)
    publish_signature(claimed).apply_async()
    [attempt] = until(
        lambda: [a for a in refresh_attempts(integration.id) if a.finished_at], "the refresh"
    )

    assert (attempt.outcome, attempt.error_code) == ("configuration_error", "configuration_error")
    assert "client_id" in (attempt.error_message or "")
    assert token_calls(sandbox, "x") == []  # refused before any call
    after = fresh(Integration, integration.id)
    assert after.status is IntegrationStatus.REFRESH_NEEDED  # never needs_reauth
    assert after.token_version == integration.token_version
    hold = timedelta(seconds=no_x_client.token_client_error_hold_s)
    assert after.refresh_lease_until > utcnow() + hold - timedelta(minutes=1)
    waiting = fresh(Post, post.id)
    assert (waiting.status, waiting.attempts) == (PostStatus.RETRYING, 1)
    with service_session() as s:
        assert claim_due_posts(s, no_x_client) == []  # it waits for the operator
    [line] = errors(log_lines, "token.refresh_configuration_error")
    assert line["provider"] == "x"


@pytest.mark.parametrize("network", ["x", "linkedin", "reddit", "discord"])
def test_a_client_the_network_refuses_is_a_configuration_error_not_a_disconnect(
    network: str,
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
) -> None:
    integration = connect(network)
    sandbox.register_client(network, "herald-production-app", "its-real-secret")
    with service_session() as s:
        outcome = refresh_integration(s, integration.id, pub_settings, keys)

    assert outcome.outcome == "configuration_error"
    assert len(token_calls(sandbox, network)) == 1
    after = fresh(Integration, integration.id)
    assert (after.status, after.token_version) == (IntegrationStatus.ACTIVE, 1)
    assert after.refresh_lease_until > utcnow()
    assert revoked_tokens(sandbox, network, integration.external_account_id) == []
    [attempt] = refresh_attempts(integration.id)
    assert attempt.outcome == "configuration_error"


def test_the_check_at_start_names_each_provider_in_use_without_its_client(
    connect: ConnectFn, pub_settings: Settings, log_lines: list[dict[str, Any]]
) -> None:
    for network in ("x", "linkedin", "mastodon", "reddit"):
        connect(network)
    settings = without_client(
        pub_settings,
        x={"client_id": ""},
        linkedin={"client_id": "app", "client_secret": ""},
        discord={},  # not in use: not reported
    )
    assert check_at_start(settings) == {"x": ("client_id",), "linkedin": ("client_secret",)}
    reported = errors(log_lines, "provider.client_credentials_missing")
    assert [(line["provider"], line["missing"]) for line in reported] == [
        ("linkedin", ["client_secret"]),
        ("x", ["client_id"]),
    ]
    assert all(line["setting"] == "HERALD_PROVIDER_CREDENTIALS" for line in reported)


def test_a_worker_reports_the_gap_loudly_when_it_starts(
    no_x_client: Settings,
    connect: ConnectFn,
    celery_app: Any,
    telemetry: Any,
    log_lines: list[dict[str, Any]],
) -> None:
    connect("x")
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, queues=list(QUEUES), loglevel="WARNING"
    ):
        until(
            lambda: errors(log_lines, "provider.client_credentials_missing"),
            "the worker's report",
        )
