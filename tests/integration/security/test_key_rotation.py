"""``herald keys rotate`` re-seals every token under the newest key, batched and resumable,
without clobbering a refresh that wins meanwhile; ``herald keys status`` counts per key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.cli import cli
from herald.models import AuditEvent, Integration
from herald.security.credentials import open_tokens
from herald.security.crypto import KeyRing, TokenBinding
from herald.security.rotation import remaining, rotate, status
from herald.settings import get_settings
from tests.fixtures.factories import make_integration, make_workspace

TOKENS = 5


def _rings() -> tuple[KeyRing, KeyRing]:
    """(newest first, as configured; the same keys with the old one sealing)."""
    spec = get_settings().token_keys.get_secret_value()
    new, old = spec.split(",")
    return KeyRing.parse(spec), KeyRing.parse(f"{old},{new}")


def _old_tokens(session: Session, old_ring: KeyRing) -> list[Integration]:
    workspace = make_workspace(session)
    made = []
    for n in range(TOKENS):
        integration = make_integration(
            session, workspace, access_token=f"a{n}", refresh_token=f"r{n}"
        )
        binding = TokenBinding(workspace.id, integration.provider, integration.id)
        integration.access_token_ciphertext = old_ring.seal(f"a{n}", binding)
        integration.refresh_token_ciphertext = old_ring.seal(f"r{n}", binding)
        integration.token_key_id = old_ring.active
        made.append(integration)
    session.flush()
    return made


@contextmanager
def _sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session, session.begin():
        yield session


def test_rotation_reseals_everything_resumes_and_never_clobbers_a_refresh(
    committed: Engine,
) -> None:
    ring, old_ring = _rings()
    with db.session_scope() as session:
        made = _old_tokens(session, old_ring)
        assert status(session)[old_ring.active] == 2 * TOKENS
    # A first run stopped after one batch of two: the rest is still there to do.
    stopped: list[int] = []

    def stop_after_first(n: int) -> None:
        stopped.append(n)
        raise KeyboardInterrupt

    with suppress(KeyboardInterrupt):
        rotate(lambda: _sessions(committed), ring, batch=2, progress=stop_after_first)
    with db.session_scope() as session:
        assert remaining(session, ring) == TOKENS - 2
        # A refresh wins on one row between the read and the write of the next run: simulated
        # by bumping its version, which the rotation's conditional UPDATE then sees.
        session.execute(
            update(Integration)
            .where(Integration.id == made[-1].id)
            .values(token_version=Integration.token_version + 1)
        )
    done = rotate(lambda: _sessions(committed), ring, batch=2)
    assert done.resealed + done.skipped == TOKENS - 2
    assert done.unreadable == 0
    with db.session_scope() as session:
        for integration in session.scalars(select(Integration)).all():
            tokens = open_tokens(integration, ring)  # every token still opens, same values
            assert tokens.access_token.startswith("a")
        assert status(session)[ring.active] == 2 * TOKENS
        assert remaining(session, ring) == 0


def test_the_cli_shows_status_rotates_with_progress_and_is_audited(committed: Engine) -> None:
    ring, old_ring = _rings()
    with db.session_scope() as session:
        _old_tokens(session, old_ring)
    runner = CliRunner()
    before = runner.invoke(cli, ["keys", "status"])
    assert before.exit_code == 0, before.output
    assert f"{ring.active} (active): 0" in before.output
    assert f"{old_ring.active}: {2 * TOKENS}" in before.output
    rotated = runner.invoke(cli, ["keys", "rotate", "--batch", "2"])
    assert rotated.exit_code == 0, rotated.output
    assert f"re-sealed {TOKENS}" in rotated.output
    after = runner.invoke(cli, ["keys", "status"])
    assert f"{ring.active} (active): {2 * TOKENS}" in after.output
    with db.session_scope() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.event_type == "keys.rotation"))
        assert event is not None
        assert event.details["resealed"] == TOKENS
