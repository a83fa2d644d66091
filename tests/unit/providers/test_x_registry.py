"""The registry resolves every adapter by name and hands it the configured credentials."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from herald.providers.base import Provider
from herald.providers.registry import (
    PROVIDERS,
    UnknownProvider,
    client_credentials,
    get_provider,
)
from herald.settings import Settings


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_registered_network_builds_a_provider(name: str) -> None:
    provider = get_provider(name, Settings(env="development", sandbox_url="http://127.0.0.1:9"))
    assert isinstance(provider, Provider)
    assert provider.name == name


def test_unknown_network_is_a_lookup_error() -> None:
    with pytest.raises(UnknownProvider):
        get_provider("friendster", Settings(env="development"))


def test_credentials_come_from_the_mapping_or_the_named_settings() -> None:
    settings = Settings(
        env="development",
        provider_credentials={
            "x": {"client_id": SecretStr("cid"), "client_secret": SecretStr("csecret")},
            "linkedin": {"client_id": SecretStr("li-id")},
        },
    )
    assert client_credentials(settings, "x") == {"client_id": "cid", "client_secret": "csecret"}
    assert client_credentials(settings, "linkedin") == {"client_id": "li-id", "client_secret": ""}
    assert client_credentials(Settings(env="development"), "x") == {
        "client_id": "",
        "client_secret": "",
    }
