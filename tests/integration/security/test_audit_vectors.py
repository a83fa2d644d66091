"""Negative vectors, as transparency logs test their proofs: a fixed set of tampered logs, one
per kind of tampering, each detected with the right row (or checkpoint) named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from herald.models import AuditChainHead, AuditEvent
from herald.security import checkpoints
from herald.security.audit import Actor, EventType, chain_hash, record
from herald.security.audit_admin import append_only_lifted, purge
from herald.security.audit_verify import verify_chain
from herald.security.checkpoints import CheckpointKeys, generate_signing_key
from herald.settings import Settings
from tests.fixtures.audit import checkpoint_settings, rehash_from


@dataclass
class Log:
    session: Session
    settings: Settings
    folder: Path

    def row(self, sequence: int) -> AuditEvent:
        event = self.session.scalar(select(AuditEvent).where(AuditEvent.sequence == sequence))
        assert event is not None
        return event

    def set_head(self, sequence: int) -> None:
        self.session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == 1)
            .values(sequence=sequence, hash=self.row(sequence).hash)
        )

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))


@pytest.fixture
def session(owner_db_session: Session) -> Session:
    """Tampering takes the tables' owner: the application's roles cannot change audit rows."""
    return owner_db_session


@pytest.fixture
def log(session: Session, tmp_path: Path) -> Log:
    """Rows 1-6 with signed checkpoints at rows 3 and 6 (the table starts empty: the test's
    transaction is rolled back)."""
    assert session.scalar(select(AuditEvent.id).limit(1)) is None
    settings = checkpoint_settings(tmp_path / "checkpoints")
    actor = Actor("user", "u-1", ip="198.51.100.7", user_agent="vectors")
    for n in range(1, 7):
        record(session, EventType.ADMIN_ACTION, actor=actor, message=f"event {n}")
        if n in (3, 6):
            checkpoints.write(session, settings)
    session.flush()
    assert verify_chain(session, settings).ok
    return Log(session, settings, tmp_path / "checkpoints")


def edit(log: Log) -> None:
    with append_only_lifted(log.session):
        log.session.execute(
            update(AuditEvent).where(AuditEvent.sequence == 4).values(outcome="failure")
        )


def edit_and_rehash_one_row(log: Log) -> None:
    with append_only_lifted(log.session):
        event = log.row(4)
        event.message = "nothing happened"
        event.hash = chain_hash(event.prev_hash, event)
        log.session.flush()


def delete_row(log: Log) -> None:
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence == 4))


def insert_row(log: Log) -> None:
    with append_only_lifted(log.session):
        for sequence in (6, 5, 4):
            log.session.execute(
                update(AuditEvent)
                .where(AuditEvent.sequence == sequence)
                .values(sequence=sequence + 1)
            )
        forged = AuditEvent(
            sequence=4,
            chain_format=2,
            occurred_at=log.row(3).occurred_at,
            event_type="admin.action",
            severity="low",
            outcome="success",
            actor_type="user",
            actor_id="u-1",
            details={},
            message="forged",
            prev_hash=log.row(3).hash,
        )
        forged.hash = chain_hash(forged.prev_hash, forged)
        log.session.add(forged)
        log.session.flush()


def reorder_rows(log: Log) -> None:
    with append_only_lifted(log.session):
        for old, new in ((4, -4), (5, 4), (-4, 5)):
            log.session.execute(
                update(AuditEvent).where(AuditEvent.sequence == old).values(sequence=new)
            )


def truncate_tail(log: Log) -> None:
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence >= 5))
    log.set_head(4)  # the attacker covers their tracks in the database


def truncate_tail_after_the_last_checkpoint(log: Log) -> None:
    record(log.session, EventType.ADMIN_ACTION, message="event 7")
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence == 7))


def truncate_head(log: Log) -> None:
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence <= 2))


def truncate_head_at_a_checkpoint(log: Log) -> None:
    """Rows 1-3 deleted up to the scheduled checkpoint at row 3: only a purge's checkpoint,
    followed by the purge's own row, may anchor a cut."""
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence <= 3))


def truncate_head_at_a_purge_checkpoint_and_its_record(log: Log) -> None:
    """A real purge, then its ``audit.purge`` row (the record of who cut, and where) deleted
    and the head moved back: the cut is anchored, but no purge is on record for it."""
    purge(log.session, log.settings, log.row(4).occurred_at, Actor("user", "u-1"))
    purged = log.session.scalar(
        select(AuditEvent.sequence).where(AuditEvent.event_type == EventType.AUDIT_PURGE.value)
    )
    assert purged == 7
    with append_only_lifted(log.session):
        log.session.execute(delete(AuditEvent).where(AuditEvent.sequence == purged))
    log.set_head(6)


def rewrite_the_chain(log: Log) -> None:
    """Edit row 4 and recompute every hash after it: every link holds, only the checkpoint
    at row 6 tells."""
    with append_only_lifted(log.session):
        log.row(4).message = "rewritten"
        log.session.flush()
    rehash_from(log.session, 4)


def forge_a_checkpoint(log: Log) -> None:
    """A checkpoint over the rewritten chain, signed with a key of the same id."""
    rewrite_the_chain(log)
    last = log.checkpoint_files()[-1]
    last.unlink()
    impostor, _ = generate_signing_key("k1")
    forged_settings = checkpoint_settings(log.folder)
    keys = CheckpointKeys.from_settings(
        forged_settings.model_copy(update={"audit_signing_key": _secret(impostor)})
    )
    previous = checkpoints.latest(log.folder)
    forged = checkpoints.sign(
        keys, 6, chain_hash=log.row(6).hash, previous=previous, reason="scheduled"
    )
    (log.folder / forged.name).write_text(json.dumps(_as_dict(forged)))


def edit_a_checkpoint(log: Log) -> None:
    rewrite_the_chain(log)
    last = log.checkpoint_files()[-1]
    data = json.loads(last.read_text())
    data["hash"] = log.row(6).hash
    last.write_text(json.dumps(data))


def replay_a_checkpoint(log: Log) -> None:
    """An old checkpoint copied in as the newest, to vouch for a chain cut back to row 3."""
    first = log.checkpoint_files()[0]
    shutil.copy(first, log.folder / "99999999T999999999999Z-000000000003-replayed.json")


def unknown_key(log: Log) -> None:
    last = log.checkpoint_files()[-1]
    data = json.loads(last.read_text())
    data["key_id"] = "nobody"
    last.write_text(json.dumps(data))


def _secret(value: str) -> object:
    from pydantic import SecretStr

    return SecretStr(value)


def _as_dict(checkpoint: checkpoints.Checkpoint) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(checkpoint)


Tamper = Callable[[Log], None]
VECTORS: list[tuple[Tamper, int | None, str]] = [
    (edit, 4, "edited"),
    (edit_and_rehash_one_row, 4, "row 4 was replaced"),
    (delete_row, 4, "row 4 is missing (deleted)"),
    (insert_row, 4, "row 4 was inserted"),
    (reorder_rows, 4, "link to the previous row is broken"),
    (truncate_tail, 5, "(truncated tail): checkpoint"),
    (truncate_tail_after_the_last_checkpoint, 7, "(truncated tail): the chain head"),
    (truncate_head, 1, "rows 1-2 are missing and no checkpoint anchors the cut"),
    (truncate_head_at_a_checkpoint, 1, "rows 1-3 are missing: checkpoint"),
    (truncate_head_at_a_purge_checkpoint_and_its_record, 1, "no audit.purge row records"),
    (rewrite_the_chain, 4, "rows after 3 were rewritten: row 6 does not match checkpoint"),
    (forge_a_checkpoint, 6, "bad signature or an unknown key (forged)"),
    (edit_a_checkpoint, 6, "bad signature or an unknown key (forged)"),
    (unknown_key, 6, "bad signature or an unknown key (forged)"),
    (replay_a_checkpoint, 3, "replays an earlier one"),
]


@pytest.mark.parametrize(
    ("tamper", "row", "reason"), VECTORS, ids=[tamper.__name__ for tamper, _, _ in VECTORS]
)
def test_each_kind_of_tampering_is_found_at_the_right_row(
    log: Log, tamper: Tamper, row: int | None, reason: str
) -> None:
    tamper(log)
    log.session.flush()
    log.session.expire_all()
    report = verify_chain(log.session, log.settings)
    assert not report.ok
    assert report.first_break == row, report.reason
    assert reason in (report.reason or "")


def test_a_rotated_key_still_verifies_old_checkpoints(log: Log) -> None:
    old_public = _public_entry(log.settings)
    signing, _ = generate_signing_key("k2")
    rotated = log.settings.model_copy(
        update={"audit_signing_key": _secret(signing), "audit_verify_keys": old_public}
    )
    record(log.session, EventType.ADMIN_ACTION, message="after rotation")
    written = checkpoints.write(log.session, rotated)
    assert written.key_id == "k2"
    report = verify_chain(log.session, rotated)
    assert report.ok, report.reason
    assert report.checkpoints == 3
    without_old = rotated.model_copy(update={"audit_verify_keys": ""})
    assert "forged" in (verify_chain(log.session, without_old).reason or "")


def _public_entry(settings: Settings) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from herald.security.checkpoints import _b64e

    keys = CheckpointKeys.from_settings(settings)
    assert keys.signer is not None
    kid, private = keys.signer
    return f"{kid}:{_b64e(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))}"


def test_the_session_is_not_left_with_the_trigger_off(log: Log) -> None:
    edit(log)
    with pytest.raises(Exception, match="append-only"), log.session.begin_nested():
        log.session.execute(text("DELETE FROM audit_events"))
