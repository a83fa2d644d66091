"""The sandbox's token endpoints check the OAuth client as the networks do: a missing or wrong
client (id or secret) is refused in each network's own shape, before the grant is looked at.
Without a registered client any named one passes; with one, only it does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from herald.sandbox import SandboxClient, SandboxServer

BOGUS_GRANT = {"grant_type": "refresh_token", "refresh_token": "not-a-token"}


@dataclass(frozen=True)
class TokenEndpoint:
    network: str
    path: str
    basic: bool  # the client authenticates with HTTP Basic (else in the form)
    refusal_status: int
    refusal: dict[str, Any]  # the fields of the refusal body

    def call(self, url: str, client_id: str | None, secret: str | None) -> httpx.Response:
        form = dict(BOGUS_GRANT)
        auth = None
        if self.basic and client_id is not None:
            auth = (client_id, secret or "")
        elif client_id is not None:
            form |= {"client_id": client_id} | ({"client_secret": secret} if secret else {})
        return httpx.post(f"{url}/{self.network}{self.path}", data=form, auth=auth)

    def refused(self, response: httpx.Response) -> bool:
        body = response.json()
        if self.network == "threads":  # Graph: 101 names a missing field, 1 a wrong secret
            body = body["error"]
            if body.get("code") not in (1, 101):
                return False
        return response.status_code == self.refusal_status and all(
            body.get(k) == v for k, v in self.refusal.items()
        )


ENDPOINTS = [
    TokenEndpoint(
        "x",
        "/2/oauth2/token",
        True,
        401,
        {"error": "unauthorized_client", "error_description": "Missing valid authorization header"},
    ),
    TokenEndpoint("linkedin", "/oauth/v2/accessToken", False, 401, {"error": "invalid_client"}),
    TokenEndpoint("reddit", "/api/v1/access_token", True, 401, {"message": "Unauthorized"}),
    TokenEndpoint("discord", "/oauth2/token", True, 401, {"error": "invalid_client"}),
    TokenEndpoint("mastodon", "/oauth/token", False, 401, {"error": "invalid_client"}),
    TokenEndpoint("threads", "/oauth/access_token", False, 400, {"type": "OAuthException"}),
]
IDS = [e.network for e in ENDPOINTS]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_a_missing_client_secret_is_refused_in_the_networks_shape(
    endpoint: TokenEndpoint, sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    if endpoint.network == "x":  # X's public clients send no secret: the id is what is needed
        response = endpoint.call(sandbox_server.url, None, None)
    else:
        response = endpoint.call(sandbox_server.url, "herald-app", None)
    assert endpoint.refused(response), response.text


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_only_the_registered_client_passes_once_one_is_registered(
    endpoint: TokenEndpoint, sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    url = sandbox_server.url
    assert not endpoint.refused(endpoint.call(url, "any-app", "any-secret"))
    sandbox.register_client(endpoint.network, "the-app", "the-secret")
    wrong = endpoint.call(url, "the-app", "a-wrong-secret")
    assert endpoint.refused(wrong), wrong.text
    if endpoint.network == "threads":
        assert wrong.json()["error"]["message"] == "Error validating client secret."
    assert endpoint.refused(endpoint.call(url, "another-app", "the-secret"))
    passed = endpoint.call(url, "the-app", "the-secret")
    assert not endpoint.refused(passed)
    assert passed.status_code == 400  # the client passed; the bogus grant did not


def test_threads_names_a_missing_app_id_and_checks_the_secret_of_a_token_exchange(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    missing = httpx.post(f"{sandbox_server.url}/threads/oauth/access_token", data={"code": "c"})
    assert missing.json()["error"] | {"fbtrace_id": None} == {
        "message": "Missing client_id parameter.",
        "type": "OAuthException",
        "code": 101,
        "fbtrace_id": None,
    }
    assert missing.status_code == 400
    sandbox.register_client("threads", "the-app", "the-secret")
    exchange = httpx.get(
        f"{sandbox_server.url}/threads/access_token",
        params={"grant_type": "th_exchange_token", "client_secret": "wrong", "access_token": "t"},
    )
    assert exchange.json()["error"]["message"] == "Error validating client secret."


def test_registered_clients_are_listed_without_secrets_and_cleared_by_reset(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    sandbox.register_client("x", "the-app", "the-secret")
    listing = httpx.get(f"{sandbox_server.url}/_sandbox/clients").text
    assert "the-app" in listing
    assert "the-secret" not in listing
    sandbox.reset()
    assert httpx.get(f"{sandbox_server.url}/_sandbox/clients").json() == {}
