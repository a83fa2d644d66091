"""Settings for tokens: the sandbox URL alone brings OAuth clients; the refresh lease must
outlive any task."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from herald.providers.registry import client_credentials, missing_client_credentials
from herald.settings import REAL_BASE_URLS, Settings


def test_the_sandbox_url_alone_names_an_oauth_client_for_every_network() -> None:
    settings = Settings(env="development", sandbox_url="http://127.0.0.1:8765")
    for network in REAL_BASE_URLS:
        assert client_credentials(settings, network) == {
            "client_id": f"herald-{network}",
            "client_secret": "sandbox",
        }
        assert missing_client_credentials(settings, network) == ()


def test_configured_clients_win_over_the_sandbox_placeholders() -> None:
    mine = {"x": {"client_id": SecretStr("my-app")}}
    settings = Settings(
        env="development", sandbox_url="http://127.0.0.1:8765", provider_credentials=mine
    )
    assert client_credentials(settings, "x") == {"client_id": "my-app", "client_secret": ""}
    assert client_credentials(settings, "reddit")["client_id"] == "herald-reddit"
    assert settings.with_sandbox("http://other").provider_credentials["x"] == mine["x"]


def test_without_the_sandbox_no_client_is_invented() -> None:
    assert client_credentials(Settings(env="development"), "x") == {
        "client_id": "",
        "client_secret": "",
    }


def test_the_refresh_lease_must_outlive_the_task_time_limit() -> None:
    with pytest.raises(ValidationError, match="HERALD_TOKEN_REFRESH_LEASE_S"):
        Settings(env="development", task_time_limit_s=300, token_refresh_lease_s=200)
