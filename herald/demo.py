"""``herald demo``: the main job, end to end, on embedded defaults.

It starts the provider sandbox, a worker and beat in this process (SQLite file, in-process
broker), connects accounts on several networks for two workspaces, schedules a few dozen
posts over about twenty seconds with faults injected at the sandbox, shows progress, and ends
with a table of every post. One connection's refresh token is revoked: it ends
``needs_reauth`` with its post waiting, the alert raised, the ``integration.needs_reauth``
webhook delivered to a receiver on loopback, and the audit event written. It exits non-zero if
any post did not end as the scenario says.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from herald import db
from herald.contracts import SchedulePost
from herald.models import Integration, Post, PostStatus, Workspace, utcnow
from herald.providers.base import Account
from herald.publishing.scheduling import SchedulingError, schedule_post
from herald.sandbox import SandboxClient, run_in_thread
from herald.security.crypto import KeyRing
from herald.settings import Settings, use_settings
from herald.tokens.connect import connect_integration, tokens_from

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
    revoke_refresh: bool = False


SCENARIO: tuple[Connection, ...] = (
    Connection("acme-mastodon", "acme", "mastodon", 6),
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
    Connection(
        "globex-linkedin-refused",
        "globex",
        "linkedin",
        1,
        expect=P.FAILED,
        story="refused for good (422)",
        faults=(
            {"kind": "error", "status": 422, "message": "Content is a duplicate", "method": "POST"},
        ),
    ),
    Connection("globex-telegram", "globex", "telegram", 4),
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
    Connection("globex-discord", "globex", "discord", 2),
    Connection(
        "globex-reddit",
        "globex",
        "reddit",
        2,
        post_settings={"subreddit": "herald_demo", "title": "Herald demo post"},
    ),
)
DURATION_S = 20.0


def demo_settings(database: Path, sandbox_url: str) -> Settings:
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
        outbound_allow_hosts=["127.0.0.1"],  # the demo's own webhook receiver
        log_level="WARNING",
    )
    return base.with_sandbox(sandbox_url)


def run(console: Console | None = None, database: Path | None = None) -> int:
    from herald.celery_app import app
    from herald.embedded import EmbeddedRuntime, configure_app
    from herald.migrations import runner
    from herald.telemetry.logging import configure_logging

    console = console or Console(width=max(Console().width, 140))
    database = database or Path.cwd() / "herald-demo.sqlite3"
    for leftover in database.parent.glob(database.name + "*"):
        leftover.unlink()
    with run_in_thread() as server:
        settings = demo_settings(database, server.url)
        use_settings(settings)
        configure_logging(settings)
        configure_app(app, settings)
        runner.upgrade(settings.database_url)
        db.use_engine(db.make_engine(settings.database_url))
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
            _report_reauth(console, settings, hooks)
        sandbox.close()
    return 0 if ok else 1


def _seed(
    sandbox: SandboxClient, settings: Settings, console: Console
) -> tuple[dict[uuid.UUID, Connection], list[str]]:
    keys = KeyRing.from_settings(settings)
    start = utcnow() + timedelta(seconds=2)
    expected: dict[uuid.UUID, Connection] = {}
    rejected: list[str] = []
    with db.session_scope() as session:
        workspaces = {slug: Workspace(name=slug.title(), slug=slug) for slug in ("acme", "globex")}
        session.add_all(workspaces.values())
        session.flush()
        total = sum(c.posts for c in SCENARIO)
        n = 0
        for conn in SCENARIO:
            integration = _connect(session, sandbox, keys, conn, workspaces[conn.workspace])
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


def _connect(
    session: Any, sandbox: SandboxClient, keys: KeyRing, conn: Connection, ws: Workspace
) -> Integration:
    created = sandbox.create_account(conn.network, handle=conn.key, settings=conn.settings)
    if conn.expire_tokens:
        sandbox.expire_tokens(conn.network, created["account_id"])
    if conn.revoke_refresh:
        sandbox.revoke_token(created["refresh_token"])
    return connect_integration(
        session,
        workspace_id=ws.id,
        provider=conn.network,
        account=Account(
            external_id=created["account_id"],
            handle=created.get("handle"),
            settings=created.get("settings") or {},
        ),
        tokens=tokens_from(created),
        keys=keys,
    )


def _statuses() -> Counter[str]:
    with db.session_scope() as session:
        return Counter(status.value for status in session.scalars(select(Post.status)))


def _watch(console: Console, expected: dict[uuid.UUID, Connection]) -> None:
    started = time.monotonic()
    deadline = started + DURATION_S + 25
    terminal = {P.PUBLISHED, P.FAILED, P.NEEDS_REVIEW, P.CANCELLED}
    while time.monotonic() < deadline:
        counts = _statuses()
        line = "  ".join(f"{name} {counts[name]}" for name in sorted(counts))
        console.print(f"t+{time.monotonic() - started:5.1f}s  {line}")
        waiting = sum(1 for c in expected.values() if c.expect is P.RETRYING)  # for the user
        if sum(counts[s.value] for s in terminal) + min(waiting, counts["retrying"]) == len(
            expected
        ):
            return
        time.sleep(1.0)
    console.print("[yellow]time is up: some posts did not finish")


def _report(
    console: Console,
    expected: dict[uuid.UUID, Connection],
    rejected: list[str],
    sandbox: SandboxClient,
) -> bool:
    table = Table(title="Every post", show_lines=False)
    for column in ("account", "status", "expected", "tries", "url or error"):
        table.add_column(column)
    wrong = 0
    with db.session_scope() as session:
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
                detail[:100],
            )
    console.print(table)
    totals = Counter(p.status.value for p in posts)
    console.print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    console.print(f"refused at scheduling: {'; '.join(rejected)}")
    console.print(f"posts the sandbox received: {len(sandbox.posts())}")
    for conn in SCENARIO:
        if conn.story != "published":
            console.print(f"  {conn.key}: {conn.story}")
    if wrong:
        console.print(f"[red bold]{wrong} post(s) did not end as the scenario expects")
        return False
    console.print("[green bold]every post ended as the scenario expects")
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
