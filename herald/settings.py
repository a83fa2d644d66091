"""Herald's one settings object.

Every value comes from an environment variable prefixed ``HERALD_`` (or a ``.env`` file).
Defaults are the embedded ones: a SQLite file, an in-process broker, the provider sandbox.
They run a demo on a laptop; outside ``HERALD_ENV=development`` the secrets must be set.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only values. Anything that still carries one of these outside development is
# refused at start-up, naming the variable.
DEV_CRON_SECRET = "dev-cron-secret-change-me"  # noqa: S105 - a marked placeholder, refused in prod
DEV_JWT_SECRET = "dev-jwt-secret-change-me-0123456789abcdef"  # noqa: S105
DEV_TOKEN_KEYS = "dev:" + base64.urlsafe_b64encode(b"herald-development-key-32bytes!!").decode()
PLACEHOLDERS = {DEV_CRON_SECRET, DEV_JWT_SECRET, DEV_TOKEN_KEYS, "", "changeme", "change-me"}

Environment = Literal["development", "test", "production"]
ReceiverType = Literal["webhook", "slack", "email", "pagerduty", "alertmanager"]


class AlertReceiver(BaseModel):
    """One place alert notifications go (``HERALD_ALERT_RECEIVERS``, JSON keyed by name).

    Secrets (``secret``, ``routing_key``) live here, in the environment, never in a table.
    Grouping follows Alertmanager's route: alerts with the same ``group_by`` labels travel
    together; a new group waits ``group_wait_s``, a changed one ``group_interval_s``, and an
    unchanged firing group is sent again after ``repeat_interval_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ReceiverType
    url: SecretStr | None = Field(
        default=None,
        description="webhook, slack, alertmanager (base URL); secret: such URLs carry tokens",
    )
    secret: SecretStr | None = Field(default=None, description="webhook: the HMAC-SHA256 key")
    routing_key: SecretStr | None = Field(default=None, description="pagerduty integration key")
    to: list[str] = Field(default_factory=list, description="email: recipients")
    group_by: list[str] = Field(default_factory=lambda: ["rule"])
    group_wait_s: float = Field(default=30.0, ge=0)
    group_interval_s: float = Field(default=300.0, ge=0)
    repeat_interval_s: float = Field(default=4 * 3600.0, gt=0)
    send_resolved: bool = True
    workspaces: bool = Field(
        default=False, description="Workspace-scoped rules may name this receiver."
    )

    @model_validator(mode="after")
    def _needs(self) -> AlertReceiver:
        required = {
            "webhook": ("url", "secret"),
            "slack": ("url",),
            "alertmanager": ("url",),
            "pagerduty": ("routing_key",),
            "email": ("to",),
        }[self.type]
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.type} receiver needs {', '.join(missing)}")
        return self


# The real networks. ``HERALD_SANDBOX_URL`` replaces every one with ``<sandbox>/<network>``.
REAL_BASE_URLS: dict[str, str] = {
    "x": "https://api.x.com",
    "linkedin": "https://api.linkedin.com",
    "mastodon": "https://mastodon.social",
    "bluesky": "https://bsky.social",
    "threads": "https://graph.threads.net",
    "telegram": "https://api.telegram.org",
    "discord": "https://discord.com/api/v10",
    "reddit": "https://oauth.reddit.com",
}


class Settings(BaseSettings):
    """Configuration, read once per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", env_file=".env", extra="ignore")

    env: Environment = "development"
    service_name: str = "herald"

    # Storage and messaging
    database_url: str = "sqlite:///herald.sqlite3"
    broker_url: str = "memory://localhost/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_key_prefix: str = Field(
        default="", description="Prefix for every broker key in Redis (isolates deployments)."
    )
    visibility_timeout_s: int = Field(default=3600, ge=60)
    task_soft_time_limit_s: int = Field(default=120, ge=1)
    task_time_limit_s: int = Field(default=150, ge=1)

    # Secrets
    cron_secret: SecretStr = SecretStr(DEV_CRON_SECRET)
    token_keys: SecretStr = Field(
        default=SecretStr(DEV_TOKEN_KEYS),
        description="Comma-separated key ring 'kid:base64-32-bytes'; the first key encrypts.",
    )
    jwt_secret: SecretStr | None = SecretStr(DEV_JWT_SECRET)
    jwt_public_key: str | None = None
    jwt_audience: str | None = None

    # Telemetry
    telemetry_enabled: bool = Field(
        default=True, description="Tracing, metrics and instrumentation (logs are separate)."
    )
    task_events: bool = Field(
        default=False,
        description="Send Celery task events from the start. Flower enables them while it runs.",
    )
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    trace_file: str | None = Field(
        default=None, description="Write spans as JSON lines here when no OTLP endpoint is set."
    )
    trace_console: bool = False
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of traces recorded (parent-based: a flow is kept or dropped whole).",
    )

    # Publishing
    dispatch_interval_s: float = Field(default=2.0, gt=0, description="Beat tick of dispatch_due.")
    dispatch_batch_size: int = Field(default=200, ge=1, le=5000)
    dispatch_max_queued: int = Field(
        default=2000,
        ge=1,
        description="Backpressure: no more posts are queued while this many wait for a worker.",
    )
    publish_max_attempts: int = Field(default=5, ge=1, le=50)
    publish_backoff_s: float = Field(default=5.0, gt=0)
    publish_backoff_max_s: float = Field(default=600.0, gt=0)
    provider_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="Cap on posts queued or publishing at once, per provider (unset = no cap).",
    )
    sweep_interval_s: float = Field(default=30.0, gt=0)
    queued_timeout_s: float = Field(
        default=300.0, gt=0, description="A post queued this long lost its message: re-enqueue."
    )
    publishing_timeout_s: float = Field(
        default=600.0, gt=0, description="A post publishing this long lost its worker: reconcile."
    )
    schedule_max_past_s: int = Field(
        default=86_400, ge=0, description="How far in the past scheduled_at may be (then: now)."
    )
    schedule_max_future_days: int = Field(default=730, ge=1)
    max_content_chars: int = Field(default=100_000, ge=1)

    # Tokens
    token_refresh_margin_s: int = Field(
        default=900, ge=60, description="Refresh access tokens this long before they expire."
    )
    token_refresh_interval_s: float = Field(default=60.0, gt=0)

    # Providers
    sandbox_url: str | None = Field(
        default=None,
        description="Point every provider at this sandbox (e.g. http://127.0.0.1:8765).",
    )
    provider_base_urls: dict[str, str] = Field(default_factory=lambda: dict(REAL_BASE_URLS))
    provider_credentials: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description=(
            "OAuth client credentials per network, as JSON: "
            '{"x": {"client_id": "…", "client_secret": "…"}, …}'
        ),
    )
    provider_timeout_s: float = Field(default=15.0, gt=0)
    provider_connect_timeout_s: float = Field(default=5.0, gt=0)
    user_agent: str = "Herald/0.1 (+https://github.com/herald-social/herald)"

    # Outbound HTTP to addresses users supply (alert receivers, later webhooks and media)
    outbound_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts the outbound client may reach even on loopback or private addresses.",
    )
    outbound_timeout_s: float = Field(default=10.0, gt=0)
    outbound_max_redirects: int = Field(default=3, ge=0, le=10)

    # Alerts
    alert_evaluation_interval_s: float = Field(default=60.0, gt=0)
    alert_notify_interval_s: float = Field(
        default=10.0, gt=0, description="How often the notification outbox is delivered."
    )
    alert_receivers: dict[str, AlertReceiver] = Field(
        default_factory=dict, description="Named receivers as JSON (see docs/alerts.md)."
    )
    alert_default_receivers: list[str] = Field(
        default_factory=list, description="Receivers of rules that name none."
    )
    alert_notify_max_attempts: int = Field(default=8, ge=1, le=100)
    alert_notify_backoff_s: float = Field(default=30.0, gt=0)
    alert_notify_backoff_max_s: float = Field(default=1800.0, gt=0)
    alert_send_tries: int = Field(
        default=3, ge=1, le=10, description="Tries of one delivery inside one notify run."
    )
    alert_send_backoff_s: float = Field(default=0.5, ge=0)
    alert_link_url: str | None = Field(
        default=None, description="Base URL of the monitoring API, for links in notifications."
    )
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_from: str = "herald@localhost"
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    audit_verify_interval_s: float = Field(default=3600.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("HERALD_TASK_SOFT_TIME_LIMIT_S must be below HERALD_TASK_TIME_LIMIT_S")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError("HERALD_VISIBILITY_TIMEOUT_S must exceed HERALD_TASK_TIME_LIMIT_S")
        if self.publishing_timeout_s <= self.provider_timeout_s * 2:
            raise ValueError("HERALD_PUBLISHING_TIMEOUT_S must exceed twice the provider timeout")
        unknown = set(self.alert_default_receivers) - set(self.alert_receivers)
        if unknown:
            raise ValueError(f"HERALD_ALERT_DEFAULT_RECEIVERS names unknown receivers: {unknown}")
        if self.env == "development":
            return self
        secrets = {
            "HERALD_CRON_SECRET": self.cron_secret.get_secret_value(),
            "HERALD_TOKEN_KEYS": self.token_keys.get_secret_value(),
        }
        if self.jwt_public_key is None:
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            secrets["HERALD_JWT_SECRET (or HERALD_JWT_PUBLIC_KEY)"] = secret
        for name, value in secrets.items():
            if value.strip().lower() in PLACEHOLDERS:
                raise ValueError(f"{name} is unset or a development placeholder (env={self.env})")
        return self

    def provider_base_url(self, network: str) -> str:
        """The base URL Herald calls for ``network``: the sandbox's when one is set."""
        if self.sandbox_url:
            return f"{self.sandbox_url.rstrip('/')}/{network}"
        try:
            return self.provider_base_urls[network]
        except KeyError:
            raise ValueError(f"no base URL configured for provider {network!r}") from None

    def with_sandbox(self, url: str) -> Settings:
        """These settings pointed at a sandbox, with a placeholder OAuth client per network
        (the sandbox checks a client is named, as the networks do, not which)."""
        clients = {
            name: {"client_id": SecretStr(f"herald-{name}"), "client_secret": SecretStr("sandbox")}
            for name in REAL_BASE_URLS
        }
        return self.model_copy(
            update={"sandbox_url": url, "provider_credentials": clients | self.provider_credentials}
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _current  # noqa: PLW0603 - one settings object per process
    if _current is None:
        _current = Settings()
    return _current


def use_settings(settings: Settings) -> None:
    """Replace the process's settings (the demo and ``herald standalone`` build their own)."""
    global _current  # noqa: PLW0603
    _current = settings
