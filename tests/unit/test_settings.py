from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald.settings import DEV_CRON_SECRET, Settings


@pytest.fixture(autouse=True)
def _no_herald_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read defaults: hide the test run's own HERALD_* variables."""
    import os

    for name in [n for n in os.environ if n.startswith("HERALD_")]:
        monkeypatch.delenv(name)


def test_development_runs_on_embedded_defaults() -> None:
    settings = Settings(_env_file=None, env="development")
    assert settings.is_sqlite
    assert settings.broker_url.startswith("memory://")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"cron_secret": DEV_CRON_SECRET}, "HERALD_CRON_SECRET"),
        ({"cron_secret": ""}, "HERALD_CRON_SECRET"),
        ({"token_keys": "changeme"}, "HERALD_TOKEN_KEYS"),
        ({"jwt_secret": None}, "HERALD_JWT_SECRET"),
    ],
)
def test_production_refuses_placeholder_secrets_naming_the_variable(
    overrides: dict[str, object], variable: str
) -> None:
    good = {
        "cron_secret": "a-real-cron-secret",
        "token_keys": "k1:" + "C" * 43,
        "jwt_secret": "a-real-jwt-secret-of-decent-length",
    }
    with pytest.raises(ValidationError, match=variable):
        Settings(_env_file=None, env="production", **{**good, **overrides})


def test_production_accepts_real_secrets_and_a_public_key_instead_of_a_jwt_secret() -> None:
    Settings(
        _env_file=None,
        env="production",
        cron_secret="a-real-cron-secret",
        token_keys="k1:" + "C" * 43,
        jwt_secret=None,
        jwt_public_key="-----BEGIN PUBLIC KEY-----...",
    )


def test_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    with pytest.raises(ValidationError, match="HERALD_VISIBILITY_TIMEOUT_S"):
        Settings(_env_file=None, visibility_timeout_s=100, task_time_limit_s=150)


def test_sandbox_url_replaces_every_provider_base_url() -> None:
    settings = Settings(_env_file=None, sandbox_url="http://127.0.0.1:9999/")
    assert settings.provider_base_url("mastodon") == "http://127.0.0.1:9999/mastodon"
    assert Settings(_env_file=None).provider_base_url("x") == "https://api.x.com"
