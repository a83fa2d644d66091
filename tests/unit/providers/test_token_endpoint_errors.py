"""Token endpoints: a refused OAuth client is Herald's configuration error, a dead grant is
the user's. Every network that authenticates its client on refresh or code exchange."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from herald.providers import discord, linkedin, threads, x
from herald.providers.base import (
    Account,
    AuthExpired,
    ConfigurationError,
    ProviderError,
    ReauthRequired,
    TokenSet,
)
from herald.providers.mastodon import MastodonProvider
from herald.providers.reddit import RedditProvider
from herald.providers.registry import missing_client_credentials
from herald.settings import Settings

UNAUTHORIZED_CLIENT = {
    "error": "unauthorized_client",
    "error_description": "Missing valid authorization header",
}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed"}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "expired or revoked"}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, UNAUTHORIZED_CLIENT, ConfigurationError),  # X: no or wrong Basic client
        (400, INVALID_CLIENT, ConfigurationError),
        (401, {}, ConfigurationError),  # RFC 6749: 401 is client authentication
        (
            400,
            {"error": "invalid_request", "error_description": "Value passed ..."},
            ReauthRequired,
        ),
        (400, INVALID_GRANT, ReauthRequired),
    ],
)
def test_x_and_linkedin_token_answers(status: int, body: Any, expected: type) -> None:
    for classify in (x.classify, linkedin.classify):
        error = classify(status, {}, body, idempotent=False, token_endpoint=True)
        assert type(error) is expected, classify


def test_a_401_outside_the_token_endpoint_is_still_an_expired_access_token() -> None:
    assert type(x.classify(401, {}, UNAUTHORIZED_CLIENT, idempotent=False)) is AuthExpired


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": "invalid_client"}, ConfigurationError),
        (400, {"error": "unauthorized_client"}, ConfigurationError),
        (400, INVALID_GRANT, ReauthRequired),
    ],
)
def test_discord_token_answers(status: int, body: Any, expected: type) -> None:
    error = discord.classify_token_error(httpx.Response(status, json=body))
    assert type(error) is expected


@pytest.mark.parametrize(
    ("code", "message", "refreshing", "expected"),
    [
        (1, "Error validating client secret.", True, ConfigurationError),
        (101, "Missing client_id parameter.", True, ConfigurationError),
        (101, "Missing client_id parameter.", False, ProviderError),
        (1, "An unknown error occurred", True, ProviderError),
        (190, "Session has expired", True, ReauthRequired),
    ],
)
def test_threads_graph_answers_on_token_calls(
    code: int, message: str, refreshing: bool, expected: type
) -> None:
    body = {"error": {"code": code, "message": message, "type": "OAuthException"}}
    error = threads.classify(httpx.Response(400, json=body), refreshing=refreshing)
    assert isinstance(error, expected)
    if expected is ProviderError:
        assert not isinstance(error, ConfigurationError)


def answering(cls: type[Any], status: int, body: Any) -> Any:
    """An adapter with a client configured, whose network answers every call this way."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return cls(Settings(env="development"), client_id="a", client_secret="b", transport=transport)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"message": "Unauthorized", "error": 401}, ConfigurationError),
        (400, {"error": "invalid_client"}, ConfigurationError),
        (400, {"error": "invalid_grant"}, ReauthRequired),
    ],
)
def test_reddit_refresh_answers(status: int, body: Any, expected: type) -> None:
    with pytest.raises(expected):
        answering(RedditProvider, status, body).refresh(Account("alice"), TokenSet("at", "rt"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [(401, INVALID_CLIENT, ConfigurationError), (400, INVALID_GRANT, ReauthRequired)],
)
def test_mastodon_code_exchange_answers(status: int, body: Any, expected: type) -> None:
    with pytest.raises(expected):
        answering(MastodonProvider, status, body).exchange_code(
            "code", "https://herald.example/cb", "verifier"
        )


def test_missing_client_credentials_names_what_each_refresh_needs() -> None:
    unset = Settings(env="development", provider_credentials={})
    assert missing_client_credentials(unset, "x") == ("client_id",)
    assert missing_client_credentials(unset, "linkedin") == ("client_id", "client_secret")
    assert missing_client_credentials(unset, "mastodon") == ()  # nothing to refresh
    assert missing_client_credentials(unset, "bluesky") == ()  # the refresh JWT suffices
    public_x = {"x": {"client_id": SecretStr("app")}}
    configured = Settings(env="development", provider_credentials=public_x)
    assert missing_client_credentials(configured, "x") == ()
