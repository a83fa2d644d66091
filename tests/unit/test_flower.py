"""How `herald flower` starts Flower: credentials required outside development, passed in
process, loopback by default."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from herald.flower import FlowerNotSecured, flower_argv
from herald.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, env="development", **values)  # type: ignore[arg-type]


def test_flower_listens_on_loopback_unless_configured() -> None:
    assert Settings(_env_file=None).flower_address == "127.0.0.1"


def test_the_credentials_become_flowers_basic_auth() -> None:
    configured = settings(flower_basic_auth=SecretStr("ops:pw-1,audit:pw-2"))

    argv = flower_argv(configured, address="127.0.0.1", port=5555, extra=("--url_prefix=f",))

    assert argv == [
        "flower",
        "--address=127.0.0.1",
        "--port=5555",
        "--basic-auth=ops:pw-1,audit:pw-2",
        "--url_prefix=f",
    ]


@pytest.mark.parametrize("env", ["test", "production"])
def test_flower_without_credentials_is_refused_outside_development(env: str) -> None:
    unsecured = settings().model_copy(update={"env": env})

    with pytest.raises(FlowerNotSecured, match="HERALD_FLOWER_BASIC_AUTH"):
        flower_argv(unsecured, address="127.0.0.1", port=5555, extra=())


def test_development_may_run_flower_without_credentials() -> None:
    assert flower_argv(settings(), address="127.0.0.1", port=1, extra=()) == [
        "flower",
        "--address=127.0.0.1",
        "--port=1",
    ]


@pytest.mark.parametrize("value", ["no-colon", ":password-only", "ops:", "a:b,broken"])
def test_credentials_must_be_user_password_pairs_and_are_never_echoed(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(flower_basic_auth=SecretStr(value))

    assert "HERALD_FLOWER_BASIC_AUTH" in str(refused.value)
    assert value not in str(refused.value)
