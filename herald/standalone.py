"""``herald standalone``: the API, a worker, beat and the provider sandbox in one process.

On embedded defaults (a SQLite file, the in-process broker, the sandbox on a thread), so a
newcomer can drive Herald over HTTP within a minute: it makes a demo workspace with a demo
user, prints a JWT for that user and the curl commands that connect an account through the
OAuth flow (against the sandbox) and schedule a post, then serves until interrupted. The
parts are the production ones, hosted differently (:mod:`herald.embedded`).
"""

from __future__ import annotations

import shlex
import uuid
from datetime import timedelta
from pathlib import Path

import click
import jwt
from sqlalchemy import select

from herald import db
from herald.models import Membership, Role, Workspace, utcnow
from herald.settings import Settings

DEMO_USER = "demo-user"
DEMO_SLUG = "demo"
TOKEN_LIFETIME = timedelta(hours=24)


def standalone_settings(database: Path, sandbox_url: str) -> Settings:
    return Settings(
        env="development",
        database_url=f"sqlite:///{database}",
        broker_url="memory://localhost/",
        dispatch_interval_s=1.0,
        log_level="WARNING",
    ).with_sandbox(sandbox_url)


def demo_workspace() -> str:
    """The demo workspace's id (made on first start), owned by the demo user."""
    with db.session_scope() as session:
        # Which workspace has the demo's slug: a question about every workspace.
        db.service_scope(session, "standalone.find_demo_workspace")
        found = session.scalar(select(Workspace.id).where(Workspace.slug == DEMO_SLUG))
    if found is not None:
        return str(found)
    workspace_id = uuid.uuid4()
    with db.session_scope() as session:
        db.tenant_scope(session, workspace_id)
        session.add(Workspace(id=workspace_id, name="Demo", slug=DEMO_SLUG))
        session.flush()
        session.add(Membership(workspace_id=workspace_id, user_id=DEMO_USER, role=Role.OWNER))
    return str(workspace_id)


def demo_token(settings: Settings) -> str:
    """A JWT as the host application would issue it to the demo user."""
    assert settings.jwt_secret is not None
    claims: dict[str, object] = {
        "sub": DEMO_USER,
        "role": "authenticated",
        "iat": utcnow(),
        "exp": utcnow() + TOKEN_LIFETIME,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def instructions(api_url: str, token: str, workspace_id: str) -> str:
    """What to type next: plain shell, every line runnable as printed."""
    base = f"{api_url}/api/postiz"
    auth = '-H "Authorization: Bearer $HERALD_TOKEN"'
    post = (
        '{"integration_id": "\'"$INTEGRATION"\'", "content": "Hello from Herald!", '
        '"scheduled_at": "\'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"\'", "idempotency_key": "first-post"}'
    )
    return "\n".join(
        [
            f"export HERALD_TOKEN={shlex.quote(token)}",
            f"export HERALD_WORKSPACE={workspace_id}",
            "# 1. Ask for X's authorize URL (any of: x linkedin mastodon threads reddit discord)",
            f'URL=$(curl -s {auth} "{base}/oauth/x/authorize?workspace_id=$HERALD_WORKSPACE"'
            " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"url\"])')",
            "# 2. 'Consent' at the sandbox: it redirects back with a code and the state",
            "BACK=$(curl -s -o /dev/null -w '%{redirect_url}' \"$URL\")",
            "# 3. The host application hands code and state to Herald with the user's JWT",
            f'INTEGRATION=$(curl -s {auth} "{base}/oauth/x/callback?${{BACK#*\\?}}"'
            ' | python3 -c \'import json,sys; print(json.load(sys.stdin)["integration"]["id"])\')',
            "# 4. Schedule a post for now, then watch it publish",
            f"curl -s {auth} -H 'Content-Type: application/json' -X POST {base}/posts -d '{post}'",
            f'curl -s {auth} "{base}/posts"',
            f"# Everything else: {base}/docs",
        ]
    )


def run(host: str, port: int, sandbox_port: int, database: Path) -> None:
    import uvicorn

    from herald.api import create_app
    from herald.api.server import server_config
    from herald.celery_app import app
    from herald.embedded import EmbeddedRuntime, prepare
    from herald.sandbox import run_in_thread
    from herald.tasks.publishing import WorkerWatch

    with run_in_thread(host, sandbox_port) as sandbox:
        settings = standalone_settings(database, sandbox.url)
        prepare(app, settings)
        workspace_id = demo_workspace()
        server = uvicorn.Server(server_config(create_app(settings), settings, host, port))
        # The watch reconciles what a killed predecessor left publishing (the worker CLI runs
        # it on worker_ready, which an embedded worker does not send).
        with EmbeddedRuntime(app, concurrency=4), WorkerWatch(settings.sweep_interval_s):
            api_url = f"http://{host}:{port}"
            click.echo(f"Herald standalone: API {api_url}   sandbox {sandbox.url}   {database}")
            click.echo(instructions(api_url, demo_token(settings), workspace_id))
            click.echo("ready (Ctrl-C stops)", err=True)
            server.run()
