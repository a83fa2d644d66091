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
    real = {"cron_secret": "a-real-cron-secret", "token_keys": "k1:" + "C" * 43}
    settings = Settings(
        _env_file=None,
        env="production",
        jwt_secret=None,
        jwt_public_key="-----BEGIN PUBLIC KEY-----...",
        **real,
    )
    assert settings.env == "production"
    assert settings.jwt_secret is None
    assert settings.jwt_public_key == "-----BEGIN PUBLIC KEY-----..."
    assert settings.cron_secret.get_secret_value() == "a-real-cron-secret"
    # The public key is what made the missing JWT secret acceptable.
    with pytest.raises(ValidationError, match="HERALD_JWT_SECRET"):
        Settings(_env_file=None, env="production", jwt_secret=None, **real)


def test_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    with pytest.raises(ValidationError, match="HERALD_VISIBILITY_TIMEOUT_S"):
        Settings(_env_file=None, visibility_timeout_s=100, task_time_limit_s=150)


def test_sandbox_url_replaces_every_provider_base_url() -> None:
    settings = Settings(_env_file=None, sandbox_url="http://127.0.0.1:9999/")
    assert settings.provider_base_url("mastodon") == "http://127.0.0.1:9999/mastodon"
    assert Settings(_env_file=None).provider_base_url("x") == "https://api.x.com"


def test_publishing_timeout_must_outlast_the_hard_time_limit_of_a_publish() -> None:
    # Otherwise the sweep reconciles a publish still in flight: "not found yet" → sent again.
    with pytest.raises(
        ValidationError, match=r"HERALD_PUBLISHING_TIMEOUT_S.*HERALD_TASK_TIME_LIMIT_S"
    ):
        Settings(_env_file=None, publishing_timeout_s=170, task_time_limit_s=150)
    with pytest.raises(ValidationError, match="HERALD_PUBLISHING_TIMEOUT_S"):
        Settings(_env_file=None, publishing_timeout_s=180, task_time_limit_s=150)
    accepted = Settings(_env_file=None, publishing_timeout_s=181, task_time_limit_s=150)
    assert accepted.publishing_timeout_s == 181


def test_the_soft_time_limit_must_leave_room_for_one_provider_call() -> None:
    with pytest.raises(
        ValidationError,
        match=r"HERALD_TASK_SOFT_TIME_LIMIT_S.*HERALD_PROVIDER_CONNECT_TIMEOUT_S \+ "
        r"HERALD_PROVIDER_TIMEOUT_S",
    ):
        Settings(_env_file=None, task_soft_time_limit_s=20, provider_timeout_s=15)


def test_every_unsafe_timing_is_named_at_once() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(
            _env_file=None,
            task_soft_time_limit_s=200,
            task_time_limit_s=150,
            visibility_timeout_s=120,
            publishing_timeout_s=100,
        )
    message = str(refused.value)
    for variable in (
        "HERALD_TASK_SOFT_TIME_LIMIT_S (200) must be below",
        "HERALD_VISIBILITY_TIMEOUT_S (120) must exceed",
        "HERALD_PUBLISHING_TIMEOUT_S (100.0) must exceed",
    ):
        assert variable in message


def test_provider_base_urls_override_the_networks_they_name_and_keep_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_PROVIDER_BASE_URLS", '{"mastodon": "https://social.example.org"}')
    settings = Settings(_env_file=None)
    assert settings.provider_base_url("mastodon") == "https://social.example.org"
    assert settings.provider_base_url("x") == "https://api.x.com"
    assert settings.provider_base_url("telegram") == "https://api.telegram.org"


def test_a_provider_base_url_that_is_not_a_url_is_refused_naming_the_network() -> None:
    with pytest.raises(ValidationError, match=r"HERALD_PROVIDER_BASE_URLS\['x'\]"):
        Settings(_env_file=None, provider_base_urls={"x": "api.x.com"})


def test_a_network_without_a_base_url_is_a_typed_configuration_error() -> None:
    from herald.settings import ProviderNotConfigured

    settings = Settings(_env_file=None).model_copy(update={"provider_base_urls": {}})
    with pytest.raises(ProviderNotConfigured, match="HERALD_PROVIDER_BASE_URLS"):
        settings.provider_base_url("x")


def test_the_workers_poison_bound_must_come_before_rabbitmqs_delivery_limit() -> None:
    rabbitmq = {"broker_url": "amqp://guest:guest@127.0.0.1:5672//", "broker_delivery_limit": 3}
    with pytest.raises(ValidationError, match="HERALD_TASK_MAX_PROCESS_LOSSES"):
        Settings(_env_file=None, task_max_process_losses=3, **rabbitmq)
    assert Settings(_env_file=None, task_max_process_losses=2, **rabbitmq)
    # Classic queues have no delivery limit, and Redis none at all.
    assert Settings(
        _env_file=None, task_max_process_losses=3, broker_queue_type="classic", **rabbitmq
    )
    assert Settings(_env_file=None, task_max_process_losses=30, broker_delivery_limit=3)
