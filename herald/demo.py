"""``herald demo``: the main job, end to end, on embedded defaults.

It starts the provider sandbox, a worker and beat in this process (SQLite file, in-process
broker), connects accounts on several networks for two workspaces, schedules a few dozen
posts over about twenty seconds with faults injected at the sandbox, shows progress, and ends
with a table of every post, then Herald's health, the alerts the faults raised (at least the
failed-jobs spike) and their notifications, delivered to a local signed-webhook receiver the
demo starts (:mod:`herald.demo_alerts`). One connection's refresh token is revoked: it ends
``needs_reauth`` with its post waiting, the alert raised, the ``integration.needs_reauth``
integrator webhook delivered to a receiver on loopback, and the audit event written. It exits
non-zero if any post did not end as the scenario says or the failed-jobs spike was not raised
and delivered.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from herald import db, demo_alerts
from herald.connections import accounts, oauth
from herald.connections.access import Manager
from herald.connections.oauth import OAUTH_PROVIDERS
from herald.contracts import MediaIn, SchedulePost
from herald.models import AuditEvent, Integration, Post, PostStatus, Workspace, utcnow
from herald.publishing.scheduling import SchedulingError, schedule_post
from herald.sandbox import SandboxClient, run_in_thread
from herald.security.audit import Actor
from herald.security.audit_verify import verify_and_record
from herald.security.checkpoints import generate_signing_key
from herald.security.checkpoints import write as write_checkpoint
from herald.security.crypto import KeyRing
from herald.settings import Settings
from herald.tokens.connect import account_from, connect_integration, tokens_from

P = PostStatus


@dataclass(frozen=True)
class Connection:
    """One account in the scenario, the faults aimed at it, and how its posts must end."""

    key: str
    workspace: str
    network: str
    posts: int
    expect: PostStatus = P.PUBLISHED
    story: str = "published"
    faults: tuple[dict[str, Any], ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    post_settings: dict[str, Any] = field(default_factory=dict)
    expire_tokens: bool = False
    #: Media on every post of the account: "image" or "video" items from the sandbox's host.
    media: tuple[str, ...] = ()
    revoke_refresh: bool = False


SCENARIO: tuple[Connection, ...] = (
    Connection("acme-mastodon", "acme", "mastodon", 6),
    Connection("acme-mastodon-photos", "acme", "mastodon", 1, media=("image", "image")),
    Connection(
        "acme-mastodon-flaky",
        "acme",
        "mastodon",
        2,
        story="503 twice, retried with backoff",
        faults=({"kind": "error", "status": 503, "times": 6, "method": "POST"},),
    ),
    Connection("acme-x", "acme", "x", 6, story="rate limited (3 per 8 s), waits for reset"),
    Connection(
        "acme-x-lost",
        "acme",
        "x",
        1,
        story="applied, answered 500: reconciled by lookup",
        faults=({"kind": "error", "status": 500, "applied": True, "times": 1, "method": "POST"},),
    ),
    Connection(
        "acme-bluesky",
        "acme",
        "bluesky",
        4,
        story="token expired: refreshed, then published",
        expire_tokens=True,
    ),
    Connection("acme-bluesky-photo", "acme", "bluesky", 1, media=("image",)),
    Connection(
        "acme-bluesky-revoked",
        "acme",
        "bluesky",
        1,
        expect=P.RETRYING,
        story="refresh token revoked: needs_reauth once, its post waits for the user",
        expire_tokens=True,
        revoke_refresh=True,
    ),
    Connection("globex-linkedin", "globex", "linkedin", 4),
    Connection("globex-linkedin-photos", "globex", "linkedin", 1, media=("image", "image")),
    Connection(
        "globex-linkedin-refused",
        "globex",
        "linkedin",
        5,
        expect=P.FAILED,
        story="refused for good (422): the failed-jobs spike alert",
        faults=(
            {"kind": "error", "status": 422, "message": "Content is a duplicate", "method": "POST"},
        ),
    ),
    Connection("globex-telegram", "globex", "telegram", 4),
    Connection("globex-telegram-photo", "globex", "telegram", 1, media=("image",)),
    Connection(
        "globex-telegram-lost",
        "globex",
        "telegram",
        1,
        expect=P.NEEDS_REVIEW,
        story="applied, then timed out: no way to confirm",
        faults=({"kind": "timeout", "applied": True, "ms": 6000, "times": 1, "method": "POST"},),
    ),
    Connection("globex-threads", "globex", "threads", 2),
    Connection("globex-threads-video", "globex", "threads", 1, media=("video",)),
    Connection("globex-discord", "globex", "discord", 2),
    Connection("globex-discord-photo", "globex", "discord", 1, media=("image",)),
    Connection(
        "globex-reddit",
        "globex",
        "reddit",
        2,
        post_settings={"subreddit": "herald_demo", "title": "Herald demo post"},
    ),
)
DURATION_S = 20.0


def demo_settings(database: Path, sandbox_url: str, **overrides: Any) -> Settings:
    # Beat's ticks are seconds, not minutes, so that a run of half a minute sees heartbeats
    # consumed and every periodic job run; the demo also evaluates alert rules once at its end.
    base = Settings(
        env="development",
        database_url=f"sqlite:///{database}",
        broker_url="memory://localhost/",
        dispatch_interval_s=1.0,
        sweep_interval_s=2.0,
        publish_backoff_s=1.0,
        publish_backoff_max_s=3.0,
        provider_timeout_s=3.0,
        provider_connect_timeout_s=2.0,
        queued_timeout_s=15.0,
        heartbeat_interval_s=10.0,
        heartbeat_max_age_s=40.0,
        token_refresh_interval_s=20.0,
        audit_verify_interval_s=20.0,
        alert_evaluation_interval_s=20.0,
        audit_checkpoint_interval_s=20.0,
        suspicious_interval_s=20.0,
        log_level="WARNING",
        # Checkpoints next to the database, signed by a key made for this run only.
        audit_checkpoint_dir=str(database.parent / (database.name + "-checkpoints")),
        audit_signing_key=SecretStr(generate_signing_key("demo")[0]),
        # Loopback: the sandbox's media host, the alert and the integrator webhook receivers.
        **({"outbound_allow_hosts": ["127.0.0.1"]} | overrides),
    )
    return base.with_sandbox(sandbox_url)


def run(console: Console | None = None, database: Path | None = None) -> int:
    from herald.celery_app import app
    from herald.embedded import EmbeddedRuntime, prepare

    console = console or Console(width=max(Console().width, 140))
    database = database or Path.cwd() / "herald-demo.sqlite3"
    for leftover in database.parent.glob(database.name + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    with run_in_thread() as server, demo_alerts.SignedWebhookReceiver() as receiver:
        settings = demo_settings(database, server.url, **receiver.settings())
        prepare(app, settings)
        sandbox = SandboxClient(server.url)
        sandbox.set_rate_limit("x", 3, 8)

        console.rule("[bold]Herald demo")
        console.print(f"database {database}   sandbox {server.url}   broker in-process\n")
        expected, rejected = _seed(sandbox, settings, console)
        with _WebhookReceiver() as hooks:
            _subscribe(hooks.url, settings)
            with EmbeddedRuntime(app, concurrency=4):
                _watch(console, expected)
                ok = _report(console, expected, rejected, sandbox)
                alerted = demo_alerts.report(console, settings, receiver, database)
            _report_reauth(console, settings, hooks)
        ok = _audit_ending(console, settings) and ok
        sandbox.close()
    return 0 if ok and alerted else 1


def _seed(
    sandbox: SandboxClient, settings: Settings, console: Console
) -> tuple[dict[uuid.UUID, Connection], list[str]]:
    keys = KeyRing.from_settings(settings)
    start = utcnow() + timedelta(seconds=2)
    expected: dict[uuid.UUID, Connection] = {}
    rejected: list[str] = []
    workspaces = {slug: uuid.uuid4() for slug in ("acme", "globex")}
    for slug, ws in workspaces.items():
        with db.session_scope() as session:
            db.tenant_scope(session, ws)  # a workspace is made in its own scope
            session.add(Workspace(id=ws, name=slug.title(), slug=slug))
    integrations = {
        conn.key: _connect(sandbox, settings, keys, conn, workspaces[conn.workspace])
        for conn in SCENARIO
    }
    oauth_connects = sum(conn.network in OAUTH_PROVIDERS for conn in SCENARIO)
    console.print(
        f"connected {len(SCENARIO)} accounts: {oauth_connects} through the OAuth flow "
        "(authorize, consent at the sandbox, callback), the others with their own credential"
    )
    with db.session_scope() as session:
        db.service_scope(session, "demo")
        total = sum(c.posts for c in SCENARIO)
        n = 0
        for conn in SCENARIO:
            integration = integrations[conn.key]
            for fault in conn.faults:
                sandbox.inject(conn.network, account_id=integration.external_account_id, **fault)
            for i in range(conn.posts):
                # Spread over the run; X's posts all at once, to meet its rate limit.
                offset = 0.0 if conn.network == "x" else (DURATION_S - 6) * n / total
                n += 1
                post, _ = schedule_post(
                    session,
                    SchedulePost(
                        workspace_id=integration.workspace_id,
                        integration_id=integration.id,
                        content=f"{conn.key}: post {i + 1} from the Herald demo",
                        provider_settings=conn.post_settings,
                        media=[
                            _media(settings, kind, f"{conn.key}{i}{n}")
                            for n, kind in enumerate(conn.media)
                        ],
                        scheduled_at=start + timedelta(seconds=offset),
                        idempotency_key=f"demo-{conn.key}-{i}",
                    ),
                    settings,
                )
                expected[post.id] = conn
        too_long = "This post is far too long for X. " * 12
        try:
            x = session.scalar(select(Integration).where(Integration.provider == "x"))
            assert x is not None
            schedule_post(
                session,
                SchedulePost(
                    workspace_id=x.workspace_id,
                    integration_id=x.id,
                    content=too_long,
                    scheduled_at=start,
                    idempotency_key="demo-too-long",
                ),
                settings,
            )
        except SchedulingError as exc:
            rejected.append(f"{exc.code}: {exc.message}")
    console.print(
        f"scheduled {len(expected)} posts on {len(SCENARIO)} accounts across "
        f"{len({c.network for c in SCENARIO})} networks; refused 1 at scheduling\n"
    )
    return expected, rejected


DEMO_APP_PASSWORD = "demo-app-password"  # noqa: S105 - the sandbox account's, made here
DEMO = Manager(Actor("system", "herald-demo"), None)


def _media(settings: Settings, kind: str, tag: str) -> MediaIn:
    host = f"{(settings.sandbox_url or '').rstrip('/')}/_sandbox/media"
    if kind == "video":
        url = f"{host}/video-{tag}.mp4?seconds=4&bytes=300000"
        return MediaIn(url=url, kind="video", alt_text="a short clip")
    url = f"{host}/image-{tag}.jpg?w=640&h=480"
    return MediaIn(url=url, kind="image", alt_text="a demo picture")


def _media_column(post: Post) -> str:
    kinds = Counter(str(m.get("kind", "image")) for m in post.media or [])
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(kinds.items()))


def _connect(
    sandbox: SandboxClient, settings: Settings, keys: KeyRing, conn: Connection, ws: uuid.UUID
) -> Integration:
    """Connect the scenario's account as a user would: by OAuth (consent given at the
    sandbox), by app password (Bluesky), or with a bot token (Telegram, directly). The account
    whose refresh token the user revoked is connected with the tokens the sandbox issued, the
    refresh token then revoked."""
    created = sandbox.create_account(
        conn.network, handle=conn.key, settings=conn.settings, password=DEMO_APP_PASSWORD
    )
    if conn.revoke_refresh:
        sandbox.revoke_token(created["refresh_token"])
    if conn.network in OAUTH_PROVIDERS and not conn.revoke_refresh:
        started = oauth.begin(settings, keys, DEMO, ws, conn.network)
        # The newest account of the network signs in at the sandbox's consent screen.
        back = httpx.get(started.url, follow_redirects=False, timeout=10).headers["location"]
        query = parse_qs(urlsplit(back).query)
        integration, _ = oauth.finish(
            settings,
            keys,
            DEMO,
            conn.network,
            code=query["code"][0],
            state=query["state"][0],
            workspace_id=ws,
        )
    elif conn.network == "bluesky" and not conn.revoke_refresh:
        credentials = {"identifier": conn.key, "app_password": DEMO_APP_PASSWORD}
        integration, _ = accounts.connect_with_credentials(
            settings, keys, DEMO, ws, provider="bluesky", credentials=credentials
        )
    else:
        with db.session_scope() as session:
            db.tenant_scope(session, ws)
            integration = connect_integration(
                session,
                workspace_id=ws,
                provider=conn.network,
                account=account_from(created),
                tokens=tokens_from(created),
                keys=keys,
                actor=DEMO.actor,
            )
            session.expunge(integration)
    if conn.expire_tokens:
        sandbox.expire_tokens(conn.network, integration.external_account_id)
    return integration


def _statuses() -> Counter[str]:
    with db.session_scope() as session:
        db.service_scope(session, "demo")
        return Counter(status.value for status in session.scalars(select(Post.status)))


#: After the scenario's last post is due, how long the watch waits with no post settling
#: (about twice what the slowest story, a retry after its backoff, takes on an idle machine).
QUIET_S = 25.0
#: The watch never outlasts the scenario by more than this, however slowly posts settle.
LONGEST_S = 100.0


def _watch(console: Console, expected: dict[uuid.UUID, Connection]) -> None:
    """Print the posts' states each second until every post has settled. A machine busy with
    other work settles them later, not differently: the watch gives up only once no post has
    settled for :data:`QUIET_S` after the scenario, or after :data:`LONGEST_S` more."""
    started = time.monotonic()
    scenario_end = started + DURATION_S
    last_settling = scenario_end  # when the count of settled posts last grew, once past it
    terminal = {P.PUBLISHED, P.FAILED, P.NEEDS_REVIEW, P.CANCELLED}
    waiting = sum(1 for c in expected.values() if c.expect is P.RETRYING)  # for the user
    settled_before = 0
    while (now := time.monotonic()) < min(last_settling + QUIET_S, scenario_end + LONGEST_S):
        counts = _statuses()
        line = "  ".join(f"{name} {counts[name]}" for name in sorted(counts))
        console.print(f"t+{now - started:5.1f}s  {line}")
        settled = sum(counts[s.value] for s in terminal) + min(waiting, counts["retrying"])
        if settled == len(expected):
            return
        if settled > settled_before:
            settled_before, last_settling = settled, max(now, scenario_end)
        time.sleep(1.0)
    console.print("[yellow]time is up: some posts did not finish")


def _report(
    console: Console,
    expected: dict[uuid.UUID, Connection],
    rejected: list[str],
    sandbox: SandboxClient,
) -> bool:
    table = Table(title="Every post", show_lines=False)
    for column in ("account", "status", "expected", "tries", "media", "url or error"):
        table.add_column(column)
    wrong = 0
    with db.session_scope() as session:
        db.service_scope(session, "demo")
        posts = session.scalars(select(Post).order_by(Post.scheduled_at)).all()
        for post in posts:
            conn = expected[post.id]
            good = post.status is conn.expect
            wrong += not good
            if post.status is P.PUBLISHED:
                detail = post.external_url or f"message {post.external_id} (no public link)"
            else:
                detail = f"{post.last_error_code}: {post.last_error_message}"
            table.add_row(
                conn.key,
                post.status.value if good else f"[red]{post.status.value}",
                conn.expect.value,
                str(post.attempts),
                _media_column(post),
                detail[:100],
            )
    console.print(table)
    totals = Counter(p.status.value for p in posts)
    console.print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    console.print(f"refused at scheduling: {'; '.join(rejected)}")
    console.print(f"posts the sandbox received: {len(sandbox.posts())}")
    attached = [u for u in sandbox.uploads() if u["attached_to"]]
    networks = sorted({u["network"] for u in attached})
    console.print(f"media attached: {len(attached)} on {', '.join(networks)}")
    for conn in SCENARIO:
        if conn.story != "published":
            console.print(f"  {conn.key}: {conn.story}")
    if wrong:
        console.print(f"[red bold]{wrong} post(s) did not end as the scenario expects")
        return False
    console.print("[green bold]every post ended as the scenario expects")
    return True


def _audit_ending(console: Console, settings: Settings) -> bool:
    """Sign the audit chain's head, verify the chain against it, and show the run's security
    events."""
    with db.session_scope() as session:
        db.service_scope(session, "demo.audit")
        checkpoint = write_checkpoint(session, settings, reason="demo")
        report = verify_and_record(session, settings)
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.sequence)).all()
    table = Table(title="Security events of the run (audit log)", show_lines=False)
    for column in ("#", "event", "outcome", "severity", "actor", "resource", "message"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            str(event.sequence),
            event.event_type,
            event.outcome,
            event.severity,
            f"{event.actor_type}:{event.actor_id or '-'}",
            f"{event.resource_type or '-'}:{(event.resource_id or '-')[:8]}",
            event.message[:70],
        )
    console.print(table)
    if not report.ok:
        console.print(f"[red bold]audit chain broken at row {report.first_break}: {report.reason}")
        return False
    console.print(
        f"[green bold]audit chain verified[/]: {report.checked} rows against checkpoint "
        f"{checkpoint.name} (row {checkpoint.sequence}, key {checkpoint.key_id})"
    )
    return True


class _WebhookReceiver:
    """An integrator's endpoint on loopback: it keeps the events Herald delivers."""

    def __init__(self) -> None:
        self.events: list[str] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body)["event"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/herald"

    def __enter__(self) -> _WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _subscribe(url: str, settings: Settings) -> None:
    from herald.webhooks import subscriptions

    with db.session_scope() as session:
        db.service_scope(session, "demo.webhooks")
        acme = session.scalar(select(Workspace).where(Workspace.slug == "acme"))
        assert acme is not None
        subscriptions.create(
            session,
            acme.id,
            url=url,
            events=["integration.needs_reauth", "integration.reconnected"],
            keys=KeyRing.from_settings(settings),
            settings=settings,
        )


def _report_reauth(console: Console, settings: Settings, hooks: _WebhookReceiver) -> None:
    """The revoked connection: its status, the alert, the webhook and the audit event."""
    from herald.alerts.engine import check_alerts, service_sessions
    from herald.models import Alert, AlertRule, AuditEvent
    from herald.webhooks.delivery import deliver_due

    check_alerts(settings)
    deliver_due(service_sessions("demo"), settings, KeyRing.from_settings(settings))
    with db.session_scope() as session:
        db.service_scope(session, "demo.reauth")
        cut = session.scalars(
            select(Integration.handle).where(Integration.status == "needs_reauth")
        ).all()
        alerts = session.scalars(
            select(AlertRule.name)
            .join(Alert, Alert.rule_id == AlertRule.id)
            .where(Alert.status == "firing", AlertRule.name == "Connections need reconnecting")
        ).all()
        audited = session.scalars(
            select(AuditEvent.event_type).where(AuditEvent.event_type == "token.refresh.failed")
        ).all()
    console.print(f"needs_reauth: {', '.join(str(h) for h in cut) or 'none'}")
    console.print(f"alert firing: {', '.join(sorted(set(alerts))) or 'none'}")
    console.print(f"webhooks delivered: {', '.join(hooks.events) or 'none'}")
    console.print(f"audit events token.refresh.failed: {len(audited)}")
