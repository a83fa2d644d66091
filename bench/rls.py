"""What row-level security costs the publish path (``make bench-rls``).

The database work of one publish, as the worker does it: load the post and its integration,
mark it publishing and open an attempt (one transaction), then record the outcome (a second).
Run for the same posts twice, alternating in rounds: as the runtime role under RLS with the
post's workspace set (``db.tenant_scope``: one ``set_config`` per transaction) and as the
service role (``BYPASSRLS``, no setting). Prints per-publish milliseconds and the ratio.
Needs Postgres (HERALD_BENCH_DATABASE_URL, an administrator URL; default the local server).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
import uuid
from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from herald import db
from herald.migrations import roles, runner
from herald.models import Integration, Post, PostStatus, PublishAttempt, Workspace, utcnow
from herald.security.crypto import KeyRing, TokenBinding
from herald.settings import DEV_TOKEN_KEYS

ADMIN_URL = os.environ.get(
    "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RUN = uuid.uuid4().hex[:8]
DB_NAME = f"herald_bench_rls_{RUN}"
ROLES = roles.Roles(
    migration=f"herald_bench_mig_{RUN}",
    runtime=f"herald_bench_rt_{RUN}",
    service=f"herald_bench_svc_{RUN}",
)


def _url(role: str) -> str:
    url = make_url(ADMIN_URL).set(database=DB_NAME, username=role, password=None)
    return url.render_as_string(hide_password=False)


def _seed(workspaces: int, posts_per_workspace: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    keys = KeyRing.parse(DEV_TOKEN_KEYS)
    found = []
    with db.session_scope() as session:
        db.service_scope(session, "bench")
        for w in range(workspaces):
            workspace = Workspace(name=f"W{w}", slug=f"bench-{RUN}-{w}")
            session.add(workspace)
            session.flush()
            integration_id = uuid.uuid4()
            binding = TokenBinding(workspace.id, "mastodon", integration_id)
            session.add(
                Integration(
                    id=integration_id,
                    workspace_id=workspace.id,
                    provider="mastodon",
                    external_account_id=uuid.uuid4().hex[:12],
                    access_token_ciphertext=keys.seal("token", binding),
                    token_key_id=keys.active,
                )
            )
            session.flush()
            for _ in range(posts_per_workspace):
                post = Post(
                    workspace_id=workspace.id,
                    integration_id=integration_id,
                    content="bench",
                    scheduled_at=utcnow(),
                    status=PostStatus.QUEUED,
                    idempotency_key=uuid.uuid4().hex,
                )
                session.add(post)
                session.flush()
                found.append((workspace.id, post.id))
    return found


_ATTEMPTS = itertools.count(1)


def _publish(session: Session, post_id: uuid.UUID) -> None:
    post = session.scalars(select(Post).where(Post.id == post_id).with_for_update()).one()
    integration = session.get(Integration, post.integration_id)
    assert integration is not None
    post.status = PostStatus.PUBLISHING
    attempt = PublishAttempt(
        workspace_id=post.workspace_id,
        post_id=post.id,
        provider=integration.provider,
        attempt_number=next(_ATTEMPTS),  # every round publishes the same posts again
    )
    session.add(attempt)
    session.commit()  # the network call happens here
    post.status = PostStatus.PUBLISHED
    attempt.outcome = "published"
    attempt.finished_at = utcnow()
    session.commit()


def _round(
    posts: list[tuple[uuid.UUID, uuid.UUID]], scope: Callable[[Session, uuid.UUID], None]
) -> float:
    started = time.perf_counter()
    for workspace_id, post_id in posts:
        with db.session_scope() as session:
            scope(session, workspace_id)
            _publish(session, post_id)
    return (time.perf_counter() - started) / len(posts) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--posts", type=int, default=25, help="per workspace")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    try:
        roles.apply(ADMIN_URL, DB_NAME, roles.role_statements(DB_NAME, ROLES))
        runner.upgrade(_url(ROLES.migration))
        db.use_engine(db.make_engine(_url(ROLES.runtime)), db.make_engine(_url(ROLES.service)))
        posts = _seed(args.workspaces, args.posts)
        with_rls: list[float] = []
        without: list[float] = []
        for _ in range(args.rounds):
            with_rls.append(_round(posts, db.tenant_scope))
            without.append(_round(posts, lambda s, _: db.service_scope(s, "bench")))
        rls, bare = statistics.median(with_rls), statistics.median(without)
        print(f"publish path, {len(posts)} posts x {args.rounds} rounds (median per publish):")
        print(f"  runtime role, RLS + tenant scope: {rls:.3f} ms")
        print(f"  service role, no RLS:             {bare:.3f} ms")
        print(f"  ratio with/without RLS:           {rls / bare:.3f}")
    finally:
        db.dispose_engine()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
            for role in (ROLES.migration, ROLES.runtime, ROLES.service):
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
