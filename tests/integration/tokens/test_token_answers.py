"""A token endpoint's answer whose ``expires_in`` is no usable lifetime (more seconds than any
date holds, not finite, zero or less) is an answer with no known expiry, never an error raised
after the network has rotated the refresh token: the rotated token is stored, the connection
lives. Real HTTP against the sandbox, whose token endpoint takes the refresh and then answers
with the body given."""

from __future__ import annotations

import json
from typing import Any

import pytest

from herald.models import Integration, IntegrationStatus
from herald.sandbox import SandboxClient
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.refresh import refresh_integration
from tests.fixtures.database import service_session
from tests.fixtures.publishing import ConnectFn, fresh

#: network → (method, path substring of its token endpoint)
TOKEN_ENDPOINTS = {
    "x": ("POST", "oauth2/token"),
    "linkedin": ("POST", "accessToken"),
    "reddit": ("POST", "access_token"),
    "threads": ("GET", "refresh_access_token"),
}
LIFETIMES: list[Any] = [10**14, 1e300, "1e400", -3600, 0, "soon"]


@pytest.mark.parametrize("expires_in", LIFETIMES, ids=repr)
@pytest.mark.parametrize("network", sorted(TOKEN_ENDPOINTS))
def test_a_token_answer_with_no_usable_lifetime_still_stores_the_new_tokens(
    connect: ConnectFn,
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    network: str,
    expires_in: Any,
) -> None:
    integration = connect(network)
    method, path = TOKEN_ENDPOINTS[network]
    body = {
        "access_token": "rotated-access",
        "refresh_token": "rotated-refresh",
        "token_type": "bearer",
        "expires_in": expires_in,
        "scope": "",
    }
    sandbox.inject(
        network,
        "garble",
        status=200,
        body=json.dumps(body),
        applied=True,
        method=method,
        path=path,
        times=1,
    )

    with service_session() as s:
        outcome = refresh_integration(s, integration.id, pub_settings, keys)

    assert outcome.outcome == "refreshed", outcome
    stored = fresh(Integration, integration.id)
    assert stored.status is IntegrationStatus.ACTIVE
    assert stored.token_expires_at is None
    tokens = open_tokens(stored, keys)
    assert tokens.access_token == "rotated-access"
    if network != "threads":  # Threads refreshes the access token itself, with no refresh token
        assert tokens.refresh_token == "rotated-refresh"
