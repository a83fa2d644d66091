"""Purge and erasure: the only ways to cut or change the audit log, both audited, and the chain
still verifies after either."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.cli import cli
from herald.models import AuditEvent, AuditPersonalData, AuditVerification, utcnow
from herald.security import checkpoints
from herald.security.audit import Actor, EventType, record
from herald.security.audit_admin import PurgeRefused, append_only_lifted, erase_subject, purge
from herald.security.audit_verify import verify_chain
from herald.settings import Settings, get_settings, use_settings
from tests.fixtures.audit import checkpoint_settings

CLI = Actor("cli", "operator")


def _rows(session: Session, n: int, *, days_ago: int = 0, who: str = "u-1") -> None:
    for i in range(n):
        record(
            session,
            EventType.ADMIN_ACTION,
            actor=Actor("user", who, ip="192.0.2.1", user_agent="browser"),
            personal={"name": f"Ada {who}"},
            occurred_at=utcnow() - timedelta(days=days_ago, minutes=n - i),
        )


def test_a_purge_cuts_at_a_checkpoint_is_audited_and_the_rest_verifies(
    session: Session, tmp_path: Path
) -> None:
    settings = checkpoint_settings(tmp_path)
    _rows(session, 3, days_ago=40)
    _rows(session, 2)
    checkpoints.write(session, settings)
    result = purge(session, settings, utcnow() - timedelta(days=30), CLI)
    assert (result.cut, result.deleted) == (3, 3)
    first = session.scalar(select(func.min(AuditEvent.sequence)))
    assert first == 4
    assert session.scalar(select(func.min(AuditPersonalData.sequence))) == 4
    last = session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc())).first()
    assert last is not None
    assert (last.event_type, last.details["cut"]) == ("audit.purge", 3)
    report = verify_chain(session, settings)
    assert report.ok, report.reason
    assert report.checked == 3  # rows 4, 5 and the purge's own
    # Without the checkpoint at the cut, the missing rows would be a truncated head.
    (tmp_path / str(result.checkpoint)).unlink()
    assert not verify_chain(session, settings).ok


def test_a_purge_of_a_broken_chain_or_without_a_key_is_refused(
    session: Session, tmp_path: Path
) -> None:
    _rows(session, 3, days_ago=40)
    with pytest.raises(PurgeRefused, match="HERALD_AUDIT_CHECKPOINT_DIR"):
        purge(session, get_settings(), utcnow(), CLI)
    settings = checkpoint_settings(tmp_path)
    with append_only_lifted(session):
        session.execute(AuditEvent.__table__.update().values(message="edited"))
    with pytest.raises(PurgeRefused, match="broken at row 1"):
        purge(session, settings, utcnow(), CLI)
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 3


def test_erasing_a_subject_removes_its_personal_data_and_the_chain_still_verifies(
    session: Session, tmp_path: Path
) -> None:
    settings = checkpoint_settings(tmp_path)
    _rows(session, 3, who="u-1")
    _rows(session, 2, who="u-2")
    checkpoints.write(session, settings)
    assert erase_subject(session, "u-1", CLI) == 3
    kept = session.scalars(select(AuditPersonalData.subject)).all()
    assert set(kept) == {"u-2"}
    report = verify_chain(session, settings)
    assert report.ok, report.reason
    erasure = session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc())).first()
    assert erasure is not None
    assert (erasure.event_type, erasure.details) == ("audit.erasure", {"erased": 3})
    # What stays: the actor id (a pseudonymous subject id), the event and its digest.
    assert session.scalar(select(func.count()).where(AuditEvent.actor_id == "u-1")) == 3


@pytest.fixture
def cli_settings(committed: Engine, tmp_path: Path) -> Iterator[Settings]:
    previous = get_settings()
    settings = checkpoint_settings(tmp_path / "checkpoints")
    use_settings(settings)
    yield settings
    use_settings(previous)


def test_the_cli_checkpoints_verifies_and_names_the_first_broken_row(
    cli_settings: Settings,
) -> None:
    with db.session_scope() as session:
        _rows(session, 4)
    runner = CliRunner()
    written = runner.invoke(cli, ["audit", "checkpoint"])
    assert written.exit_code == 0, written.output
    assert "row 4 signed by k1" in written.output
    verified = runner.invoke(cli, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "4 rows, 1 checkpoints" in verified.output
    with db.session_scope() as session, append_only_lifted(session):
        session.execute(
            AuditEvent.__table__.update().where(AuditEvent.sequence == 2).values(outcome="denied")
        )
    broken = runner.invoke(cli, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "broken at row 2" in broken.output
    with db.session_scope() as session:
        latest = session.scalars(
            select(AuditVerification).order_by(AuditVerification.id.desc())
        ).first()
        assert latest is not None
        assert (latest.ok, latest.first_break) == (False, 2)
