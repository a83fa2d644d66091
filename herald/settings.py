"""Herald's one settings object.

Every value comes from an environment variable prefixed ``HERALD_`` (or a ``.env`` file).
Defaults are the embedded ones: a SQLite file, an in-process broker, the provider sandbox.
They run a demo on a laptop; outside ``HERALD_ENV=development`` the secrets must be set.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


# Clocks of the hosts that claim a post and of the host that sweeps it may differ this much.
CLOCK_SKEW_ALLOWANCE_S = 30.0


class ProviderNotConfigured(ValueError):
    """Herald's configuration lacks what a network's adapter needs (an operator's problem)."""


def keepalive_probes(dead_peer_timeout_s: int) -> tuple[int, int, int]:
    """TCP keepalive (idle seconds, seconds between probes, probes) that end a connection to
    a vanished host within about ``dead_peer_timeout_s``: probes from half the time, a sixth
    of it apart, three unanswered. One schedule for Postgres and the Redis broker."""
    return max(1, dead_peer_timeout_s // 2), max(1, dead_peer_timeout_s // 6), 3


def broker_kind(broker_url: str) -> str:
    """``redis``, ``amqp`` or ``memory`` (what the rest of the configuration depends on; the
    Redis schemes are those herald/broker/topology.py has guarded transports for)."""
    scheme = urlsplit(broker_url).scheme.split("+")[-1]
    if scheme in {"redis", "rediss", "sentinel"}:
        return "redis"
    if scheme in {"amqp", "amqps", "pyamqp"}:
        return "amqp"
    return scheme


def timing_problems(s: Settings) -> list[str]:
    """Every combination of time settings that can publish a post twice or never (see
    docs/configuration.md, "Timing relations"); each names the variables involved."""
    problems = []
    if s.task_soft_time_limit_s >= s.task_time_limit_s:
        problems.append(
            f"HERALD_TASK_SOFT_TIME_LIMIT_S ({s.task_soft_time_limit_s}) must be below "
            f"HERALD_TASK_TIME_LIMIT_S ({s.task_time_limit_s})"
        )
    if s.visibility_timeout_s <= s.task_time_limit_s:
        problems.append(
            f"HERALD_VISIBILITY_TIMEOUT_S ({s.visibility_timeout_s}) must exceed "
            f"HERALD_TASK_TIME_LIMIT_S ({s.task_time_limit_s}): Redis would hand a running "
            "task's message to a second worker"
        )
    if s.publishing_timeout_s <= s.task_time_limit_s + CLOCK_SKEW_ALLOWANCE_S:
        problems.append(
            f"HERALD_PUBLISHING_TIMEOUT_S ({s.publishing_timeout_s}) must exceed "
            f"HERALD_TASK_TIME_LIMIT_S ({s.task_time_limit_s}) by more than "
            f"{CLOCK_SKEW_ALLOWANCE_S:g} s: the sweep would reconcile a publish that is still "
            "running and could send the post a second time"
        )
    one_call = s.provider_connect_timeout_s + s.provider_timeout_s
    if s.task_soft_time_limit_s <= one_call:
        problems.append(
            f"HERALD_TASK_SOFT_TIME_LIMIT_S ({s.task_soft_time_limit_s}) must exceed "
            f"HERALD_PROVIDER_CONNECT_TIMEOUT_S + HERALD_PROVIDER_TIMEOUT_S ({one_call:g}): "
            "every slow answer would kill the task mid-call and strand its post in publishing"
        )
    if s.heartbeat_max_age_s <= s.heartbeat_interval_s:
        problems.append(
            f"HERALD_HEARTBEAT_MAX_AGE_S ({s.heartbeat_max_age_s}) must exceed "
            f"HERALD_HEARTBEAT_INTERVAL_S ({s.heartbeat_interval_s}): every queue would look "
            "unconsumed between two heartbeats"
        )
    if s.token_refresh_lease_s <= s.task_time_limit_s:
        problems.append(
            f"HERALD_TOKEN_REFRESH_LEASE_S ({s.token_refresh_lease_s}) must exceed "
            f"HERALD_TASK_TIME_LIMIT_S ({s.task_time_limit_s}): a refresh still running could "
            "lose its lease to a second one and spend a rotating refresh token twice"
        )
    return problems


class Settings(BaseSettings):
    """Configuration, read once per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", env_file=".env", extra="ignore")

    env: Environment = "development"
    service_name: str = "herald"

    # Storage and messaging
    database_url: str = Field(
        default="sqlite:///herald.sqlite3",
        description=(
            "The runtime connection: every request and tenant-scoped task. On Postgres, the "
            "runtime role (NOBYPASSRLS, owns no table; see `herald db roles`)."
        ),
    )
    service_database_url: str | None = Field(
        default=None,
        description=(
            "Cross-workspace jobs (dispatch, sweep, alerts, refresh beat, audit) connect here, "
            "as the service role (BYPASSRLS). Unset: the runtime URL (SQLite, or a single-role "
            "Postgres deployment, where RLS then isolates nothing from the service jobs' view)."
        ),
    )
    migration_database_url: str | None = Field(
        default=None,
        description="`herald db upgrade` connects here (the tables' owner). Unset: runtime URL.",
    )
    database_connect_timeout_s: int = Field(
        default=10,
        ge=2,
        le=300,
        description="Postgres: connecting gives up after this many seconds (a URL's own "
        "`connect_timeout` wins).",
    )
    dead_peer_timeout_s: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Postgres and a Redis broker over TCP: a connection whose server has gone "
        "silent (a host powered off, a network path cut, a listener that accepts and never "
        "answers) fails after about this many seconds instead of the kernel's hours or for "
        "ever: TCP keepalives, libpq's `tcp_user_timeout`, Redis's socket timeout (0: the "
        "defaults; a Postgres URL's own `keepalives*` or `tcp_user_timeout` wins).",
    )
    database_statement_timeout_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Postgres: the server cancels a statement of the runtime or service "
        "connection running longer than this, waiting on a lock included (0: no limit); the "
        "API answers it with 503 and a task retries. Migrations and operator commands on the "
        "migration URL have no limit.",
    )
    broker_url: str = "memory://localhost/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_key_prefix: str = Field(
        default="", description="Prefix for every broker key in Redis (isolates deployments)."
    )
    visibility_timeout_s: int = Field(
        default=3600, ge=60, description="Redis only: an unacked message is redelivered after this."
    )
    broker_queue_type: Literal["quorum", "classic"] = Field(
        default="quorum",
        description="RabbitMQ only: quorum queues (replicated, delivery limit) or classic ones.",
    )
    broker_delivery_limit: int = Field(
        default=10,
        ge=2,
        description="RabbitMQ quorum queues: deliveries of one message before it is dropped.",
    )
    task_soft_time_limit_s: int = Field(default=120, ge=1)
    task_time_limit_s: int = Field(default=150, ge=1)
    task_max_process_losses: int = Field(
        default=3,
        ge=1,
        description="Runs of one message that may kill their pool process before a worker "
        "refuses it as poison (a dead letter, acked): no message crash-loops the workers.",
    )

    # Secrets
    cron_secret: SecretStr = SecretStr(DEV_CRON_SECRET)
    token_keys: SecretStr = Field(
        default=SecretStr(DEV_TOKEN_KEYS),
        description="Comma-separated key ring 'kid:base64-32-bytes'; the first key encrypts.",
    )
    jwt_secret: SecretStr | None = SecretStr(DEV_JWT_SECRET)
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = Field(
        default=None,
        description="The issuer's JWK set: tokens naming a kid are verified with its keys.",
    )
    jwt_jwks_cache_s: float = Field(default=300.0, gt=0, description="Keep the key set this long.")
    jwt_jwks_min_refresh_s: float = Field(
        default=30.0, ge=0, description="Fetch the key set for an unknown kid at most this often."
    )
    jwt_accepted_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["authenticated", "service_role"],
        description=(
            "Comma-separated JWT `role` claims the API accepts; any other role is refused "
            "(403). `anon` (the public key) can never be accepted."
        ),
    )

    # Flower
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated user:password pairs Flower requires (HTTP basic auth). "
            "Required outside development."
        ),
    )
    flower_address: str = Field(
        default="127.0.0.1", description="Where `herald flower` listens (`--address`)."
    )

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
    telemetry_flush_timeout_s: float = Field(
        default=5.0,
        ge=0.0,
        le=120.0,
        description="At most this long, a stopping process sends what telemetry it buffered.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of traces recorded (parent-based: a flow is kept or dropped whole).",
    )

    # Monitoring
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port on which `herald worker` and `herald beat` serve Prometheus metrics "
        "(0 or unset: not served).",
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - Prometheus scrapes from another container
        description="Address the worker's and beat's metrics server listens on.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, every metrics endpoint requires 'Authorization: Bearer <token>'.",
    )
    metrics_dir: str | None = Field(
        default=None,
        description="Where worker nodes keep their multiprocess metric files (default: a "
        "herald-metrics folder in the system's temporary directory).",
    )
    metrics_finished_window_s: int = Field(
        default=86_400,
        ge=60,
        description="herald_posts counts posts in a final status (published, failed, "
        "cancelled) scheduled within this window; open statuses are counted whole.",
    )
    heartbeat_interval_s: float = Field(
        default=30.0, gt=0, description="Beat sends a heartbeat to every queue this often."
    )
    heartbeat_max_age_s: float = Field(
        default=120.0,
        gt=0,
        description="A queue whose last heartbeat round trip is older than this is not consumed.",
    )
    job_overdue_intervals: float = Field(
        default=3.0,
        ge=1.0,
        description="A periodic job is overdue when its last success (or, if it never "
        "succeeded, the first start of a beat that schedules it) is older than this many of its "
        "intervals.",
    )

    # Publishing
    dispatch_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=600,  # 1.5 ticks of lookahead stay within herald.broker.limits.MAX_ETA_AHEAD_S
        description="Beat tick of dispatch_due.",
    )
    dispatch_lookahead_s: float | None = Field(
        default=None,
        ge=0,
        le=900,  # herald.broker.limits.MAX_ETA_AHEAD_S: a message due later is refused
        description="Posts due within this many seconds are claimed now and sent with a "
        "countdown to their scheduled_at (unset = one and a half dispatch ticks; 0 = only posts "
        "already due).",
    )
    dispatch_batch_size: int = Field(default=200, ge=1, le=5000)
    dispatch_max_queued: int = Field(
        default=2000,
        ge=1,
        description="Backpressure: no more posts are queued while this many wait for a worker.",
    )
    publish_many_max: int = Field(
        default=10,
        ge=1,
        le=50,  # herald.contracts.PUBLISH_MANY_MAX
        description="Most posts due now that one publish message carries when many are due at "
        "once (herald.posts.publish_many); 1 sends one message per post.",
    )
    publish_many_spread: int = Field(
        default=16,
        ge=1,
        description="Posts due now are sent several to a message only when at least twice this "
        "many are due at once, and then in at least this many messages, so that every worker "
        "process has its share.",
    )
    publish_max_attempts: int = Field(default=5, ge=1, le=50)
    publish_backoff_s: float = Field(default=5.0, gt=0)
    publish_backoff_max_s: float = Field(default=600.0, gt=0)
    provider_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="Cap on posts queued or publishing at once, per provider (unset = no cap).",
    )
    publish_record_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description=(
            "Tries at writing a publish outcome while the database is away (bounded backoff, "
            "about 4 s for 5); then the answer goes to herald.posts.record_outcome."
        ),
    )
    sweep_interval_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Beat tick of the stuck-post sweep; also how often each worker looks for posts of "
            "its pid namespace's dead processes, and at a Redis broker that lost its messages."
        ),
    )
    queued_timeout_s: float = Field(
        default=300.0, gt=0, description="A post queued this long lost its message: re-enqueue."
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A post claimed this long ago whose message its dispatcher never confirmed sending "
            "(killed between its claim and its sends) is enqueued again by the sweep."
        ),
    )
    publishing_timeout_s: float = Field(
        default=600.0, gt=0, description="A post publishing this long lost its worker: reconcile."
    )
    sweep_batch_size: int = Field(
        default=100, ge=1, description="Stuck posts one sweep run resolves at most."
    )
    sweep_max_resolve_attempts: int = Field(
        default=5,
        ge=1,
        description="Failed resolutions of a stuck post (lookup failed or raised) before the "
        "sweep gives up and marks it needs_review.",
    )
    sweep_resolve_backoff_s: float = Field(
        default=30.0,
        gt=0,
        description="Wait before the sweep tries a post again after a failed resolution "
        "(doubles each time).",
    )

    # The per-provider circuit breaker (herald/publishing/circuit.py)
    circuit_enabled: bool = True
    circuit_window_s: float = Field(
        default=120.0, gt=0, description="Window of publish attempts the failure share covers."
    )
    circuit_min_attempts: int = Field(
        default=10, ge=1, description="Attempts in the window before the share counts."
    )
    circuit_min_integrations: int = Field(
        default=3,
        ge=1,
        description="Distinct integrations that must have failed: one broken account never "
        "opens its network's circuit.",
    )
    circuit_failure_ratio: float = Field(
        default=0.5, gt=0, le=1, description="Share of 5xx/timeouts that opens the circuit."
    )
    circuit_open_s: float = Field(
        default=60.0, gt=0, description="How long an open circuit holds posts before probing."
    )
    circuit_probe_posts: int = Field(
        default=3, ge=1, description="Posts let through per half-open probe round."
    )
    schedule_max_past_s: int = Field(
        default=86_400, ge=0, description="How far in the past scheduled_at may be (then: now)."
    )
    schedule_max_future_days: int = Field(default=730, ge=1)

    # Tokens
    token_refresh_margin_s: int = Field(
        default=900, ge=60, description="Refresh access tokens this long before they expire."
    )
    token_refresh_margins: dict[str, Annotated[int, Field(ge=60)]] = Field(
        default_factory=lambda: {"x": 1800, "linkedin": 86_400},
        description=(
            "Per-network refresh margins in seconds, as JSON, overriding "
            "HERALD_TOKEN_REFRESH_MARGIN_S for the networks named (X's two-hour tokens are "
            "refreshed 30 min ahead, LinkedIn's sixty-day ones a day ahead)."
        ),
    )
    token_refresh_interval_s: float = Field(default=60.0, gt=0)
    token_refresh_lease_s: int = Field(
        default=180,
        ge=10,
        description=(
            "How long one refresh may hold its integration (whose posts wait meanwhile). Must "
            "exceed HERALD_TASK_TIME_LIMIT_S, so a running refresh never loses it; a dead "
            "refresh worker holds the integration at most this long."
        ),
    )
    token_client_error_hold_s: int = Field(
        default=600,
        ge=10,
        description=(
            "After the network refused Herald's own OAuth client credentials, how long the "
            "integration's posts wait before its refresh is tried again."
        ),
    )

    # Providers
    sandbox_url: str | None = Field(
        default=None,
        description="Point every provider at this sandbox (e.g. http://127.0.0.1:8765).",
    )
    provider_base_urls: dict[str, str] = Field(
        default_factory=lambda: dict(REAL_BASE_URLS),
        description="Base URL per network, as JSON; the networks it names are overridden, the "
        "others keep their real API.",
    )
    provider_credentials: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description=(
            "OAuth client credentials per network, as JSON: "
            '{"x": {"client_id": "…", "client_secret": "…"}, …}'
        ),
    )
    reconcile_max_pages: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "Pages of an account's posts a reconciliation lookup reads at most; a window it "
            "cannot cover sends the post to review instead of sending it again."
        ),
    )
    oauth_redirect_base_url: str = Field(
        default="http://localhost:3000/integrations/social",
        description=(
            "The host application's page that receives the networks' OAuth redirects; each "
            "network gets its own URI, <base>/<network> (register exactly that with the network)."
        ),
    )
    oauth_state_ttl_s: float = Field(
        default=600.0, gt=0, le=3600, description="How long an OAuth authorization stays open."
    )
    provider_timeout_s: float = Field(default=15.0, gt=0)
    provider_connect_timeout_s: float = Field(default=5.0, gt=0)
    provider_upload_min_rate: int = Field(
        default=1_000_000,
        gt=0,
        description=(
            "Bytes per second an upload is allowed at the least: a request with a body gets "
            "the connect and read timeouts plus its size at this rate (the task's time limits "
            "still bound the run)."
        ),
    )
    user_agent: str = "Herald/0.1 (+https://github.com/herald-social/herald)"

    # Outbound HTTP to addresses users supply (alert receivers, later webhooks and media)
    outbound_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts the outbound client may reach even on loopback or private addresses.",
    )
    outbound_timeout_s: float = Field(default=10.0, gt=0)
    outbound_max_redirects: int = Field(default=3, ge=0, le=10)

    # Media: fetched through the outbound client into a bounded disk cache (docs/media.md)
    media_cache_dir: str = Field(
        default="",
        description="Where fetched media are held on disk; empty: a herald-media temp folder.",
    )
    media_cache_max_bytes: int = Field(default=4 * 1024**3, gt=0)
    media_max_bytes: int = Field(
        default=1024**3, gt=0, description="No media file larger than this is fetched at all."
    )
    media_fetch_timeout_s: float = Field(
        default=600.0, gt=0, description="Total time one media file may take to fetch."
    )
    media_upload_poll_s: float = Field(
        default=2.0, gt=0, description="Pause between processing-status polls of an upload."
    )
    media_upload_poll_max_s: float = Field(
        default=300.0, gt=0, description="How long an upload may stay in processing."
    )

    api_request_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="A request's head, and then its body, must each arrive within this many "
        "seconds, or the API answers 408 and closes the connection.",
    )

    # API rate limits, per workspace
    api_rate_limit: int = Field(
        default=600, ge=0, description="Requests per window per workspace (0: no limit)."
    )
    api_rate_limit_window_s: int = Field(default=60, ge=1, le=86_400)
    api_rate_limit_redis_url: str | None = Field(
        default=None,
        description="Count in this Redis (shared by every API process); unset: in-process.",
    )

    # Integrators' webhooks
    webhook_deliver_interval_s: float = Field(
        default=5.0, gt=0, description="How often the webhook outbox is delivered."
    )
    webhook_batch: int = Field(default=100, ge=1, description="Deliveries per run at most.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_pause_after: int = Field(
        default=20,
        ge=1,
        description="Failed attempts in a row (across deliveries) that pause a subscription.",
    )
    webhook_max_subscriptions: int = Field(
        default=25, ge=1, description="Subscriptions one workspace may hold at once."
    )

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
    audit_checkpoint_interval_s: float = Field(default=3600.0, gt=0)
    audit_checkpoint_dir: str | None = Field(
        default=None,
        description=(
            "Directory the signed audit checkpoints are written to, outside the database "
            "(best on write-once storage). Unset: no checkpoints are written."
        ),
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="The Ed25519 key that signs checkpoints, 'kid:base64url-32-byte-seed'.",
    )
    audit_verify_keys: str = Field(
        default="",
        description=(
            "Older checkpoint public keys still trusted, 'kid:base64url-32-bytes[,…]' "
            "(the signing key's own public key is always trusted)."
        ),
    )
    audit_verify_batch: int = Field(default=1000, ge=10, le=100_000)
    suspicious_interval_s: float = Field(default=300.0, gt=0)
    suspicious_window_s: int = Field(default=900, ge=60)
    suspicious_denials: int = Field(
        default=10, ge=1, description="Denials from one actor or IP in the window that count."
    )
    suspicious_credential_access: int = Field(
        default=50, ge=1, description="Credential accesses by one actor in the window."
    )
    suspicious_oauth_failures: int = Field(
        default=10, ge=1, description="OAuth failures from one actor or IP in the window."
    )
    suspicious_concurrent_refresh_s: float = Field(
        default=5.0,
        ge=0,
        description="Two refreshes of one token from different places this close are a finding.",
    )
    key_rotation_batch: int = Field(default=200, ge=1, le=10_000)

    # Retention (herald/publishing/retention.py)
    retention_days: int = Field(
        default=90,
        ge=1,
        description="Publish and token-refresh attempt rows of settled work, delivered alert "
        "notifications and webhook deliveries, and expired OAuth states, older than this many "
        "days are purged.",
    )
    retention_batch_size: int = Field(default=5000, ge=1, le=100_000)
    retention_max_batches: int = Field(
        default=20, ge=1, description="Batches per table and run (the next run goes on)."
    )
    retention_interval_s: float = Field(default=3600.0, gt=0, description="Beat tick of the purge.")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("provider_base_urls", mode="after")
    @classmethod
    def _override_named_networks(cls, value: dict[str, str]) -> dict[str, str]:
        """The map overrides the networks it names; the others keep their real API."""
        for network, url in value.items():
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(
                    f"HERALD_PROVIDER_BASE_URLS[{network!r}] is not an http(s) URL: {url!r}"
                )
        return REAL_BASE_URLS | value

    @model_validator(mode="after")
    def _refuse_unsafe_timing(self) -> Settings:
        problems = timing_problems(self)
        if problems:
            raise ValueError("unsafe timing settings: " + "; ".join(problems))
        return self

    @property
    def quorum_queues(self) -> bool:
        """Whether the broker is RabbitMQ with quorum queues (which drop a message after
        ``broker_delivery_limit`` deliveries)."""
        return broker_kind(self.broker_url) == "amqp" and self.broker_queue_type == "quorum"

    @model_validator(mode="after")
    def _refuse_unrecorded_drops(self) -> Settings:
        # A quorum queue drops a message after its delivery limit, unrecorded: the worker's own
        # bound on a message that kills its process must come first, and record it.
        if self.quorum_queues and self.task_max_process_losses >= self.broker_delivery_limit:
            raise ValueError(
                f"HERALD_TASK_MAX_PROCESS_LOSSES ({self.task_max_process_losses}) must be below "
                f"HERALD_BROKER_DELIVERY_LIMIT ({self.broker_delivery_limit}): RabbitMQ would "
                "drop a message that kills its pool process before the worker recorded it"
            )
        return self

    @model_validator(mode="after")
    def _sandbox_clients(self) -> Settings:
        # The sandbox checks that a token request names an OAuth client, as the networks do;
        # pointing Herald at it is enough to get one for every network not configured.
        if self.sandbox_url:
            self.provider_credentials = sandbox_clients() | self.provider_credentials
        return self

    @field_validator("jwt_accepted_roles", mode="before")
    @classmethod
    def _role_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [role.strip() for role in value.split(",") if role.strip()]
        return value

    @field_validator("jwt_accepted_roles")
    @classmethod
    def _roles_the_host_issues(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("HERALD_JWT_ACCEPTED_ROLES must name at least one role")
        if "anon" in value:
            raise ValueError(
                "HERALD_JWT_ACCEPTED_ROLES must not include anon: the anon key is public"
            )
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_password_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for pair in value.get_secret_value().split(","):
            user, _, password = pair.partition(":")
            if not user.strip() or not password:
                # The value is a secret: name the shape, never the content.
                raise ValueError("HERALD_FLOWER_BASIC_AUTH must be user:password[,user:password]")
        return value

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        unknown = set(self.alert_default_receivers) - set(self.alert_receivers)
        if unknown:
            raise ValueError(f"HERALD_ALERT_DEFAULT_RECEIVERS names unknown receivers: {unknown}")
        if self.env == "development":
            return self
        secrets = {
            "HERALD_CRON_SECRET": self.cron_secret.get_secret_value(),
            "HERALD_TOKEN_KEYS": self.token_keys.get_secret_value(),
        }
        if self.jwt_public_key is None and self.jwt_jwks_url is None:
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            secrets["HERALD_JWT_SECRET (or HERALD_JWT_PUBLIC_KEY)"] = secret
        for name, value in secrets.items():
            if value.strip().lower() in PLACEHOLDERS:
                raise ValueError(f"{name} is unset or a development placeholder (env={self.env})")
        return self

    def token_refresh_margin(self, network: str) -> int:
        """Seconds before expiry at which ``network``'s access tokens are refreshed."""
        return self.token_refresh_margins.get(network, self.token_refresh_margin_s)

    def provider_base_url(self, network: str) -> str:
        """The base URL Herald calls for ``network``: the sandbox's when one is set."""
        if self.sandbox_url:
            return f"{self.sandbox_url.rstrip('/')}/{network}"
        try:
            return self.provider_base_urls[network]
        except KeyError:
            raise ProviderNotConfigured(
                f"no base URL configured for provider {network!r} (HERALD_PROVIDER_BASE_URLS)"
            ) from None

    def with_sandbox(self, url: str) -> Settings:
        """These settings pointed at a sandbox, with a placeholder OAuth client for every
        network not configured (what setting ``HERALD_SANDBOX_URL`` alone gives)."""
        return self.model_copy(
            update={
                "sandbox_url": url,
                "provider_credentials": sandbox_clients() | self.provider_credentials,
            }
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def sandbox_clients() -> dict[str, dict[str, SecretStr]]:
    """A placeholder OAuth client per network, for the sandbox (which accepts any named client
    unless one was registered with it)."""
    return {
        name: {"client_id": SecretStr(f"herald-{name}"), "client_secret": SecretStr("sandbox")}
        for name in REAL_BASE_URLS
    }


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
