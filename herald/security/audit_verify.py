"""Verify the audit chain, against itself and against the signed checkpoints.

The walk goes in ``sequence`` order and stops at the first row that is wrong, naming it:

- a row whose content no longer matches its hash: **edited** (or moved: the sequence is hashed);
- a missing sequence number: **deleted**;
- a row whose link does not reach the row before it although the row itself is intact: the row
  before it was replaced (edited with its hash recomputed), or, when the link reaches an
  earlier row, the rows in between were **inserted** (the first of them is named);
- a row that disagrees with a checkpoint while every link holds: the chain was **rewritten**
  by someone able to recompute hashes; the first row after the last checkpoint that still
  matches is named (nothing finer is knowable without the key);
- a checkpoint beyond the last row, or a chain head ahead of it: a **truncated tail**;
- rows missing before the first one with no purge's checkpoint at the cut, or with no
  ``audit.purge`` row after it naming the cut: a **truncated head**.

Checkpoints are checked first: a file that is malformed, signed by an unknown key or with a bad
signature (**forged**), or that repeats or does not follow the one signed before it
(**replayed**) fails the verification on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.models import AuditChainHead, AuditEvent, AuditVerification
from herald.security import checkpoints
from herald.security.audit import GENESIS, EventType, chain_hash
from herald.security.checkpoints import Checkpoint, CheckpointKeys
from herald.settings import Settings, get_settings

log = structlog.get_logger("herald.audit")

_RECENT = 4096  # hashes remembered to tell an insertion from an edit
PURGE = "purge"  # the reason of the checkpoint a purge writes at its cut
PURGE_EVENT = EventType.AUDIT_PURGE.value


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    first_break: int | None  # sequence of the first wrong (or missing) row
    reason: str | None
    checkpoints: int = 0  # checkpoints whose signature and place in the chain hold
    checkpoint: str | None = None  # the checkpoint file involved in the break, if any

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Break(Exception):
    def __init__(self, sequence: int | None, reason: str, checkpoint: str | None = None) -> None:
        super().__init__(reason)
        self.sequence = sequence
        self.reason = reason
        self.checkpoint = checkpoint


def trusted_checkpoints(settings: Settings) -> list[tuple[str, Checkpoint]]:
    """The checkpoint files in signing order, each checked; raises :class:`_Break` at the first
    that is malformed, forged or replayed."""
    if not settings.audit_checkpoint_dir:
        return []
    keys = CheckpointKeys.from_settings(settings)
    trusted: list[tuple[str, Checkpoint]] = []
    seen: set[str] = set()
    for name, checkpoint in checkpoints.load(checkpoints.directory(settings)):
        if checkpoint is None:
            raise _Break(None, f"checkpoint {name} is not a well-formed checkpoint", name)
        if not checkpoints.signature_ok(checkpoint, keys):
            raise _Break(
                checkpoint.sequence,
                f"checkpoint {name} has a bad signature or an unknown key (forged)",
                name,
            )
        if checkpoint.signature in seen:
            raise _Break(checkpoint.sequence, f"checkpoint {name} replays an earlier one", name)
        if trusted and checkpoint.previous_signature != trusted[-1][1].signature:
            raise _Break(
                checkpoint.sequence,
                f"checkpoint {name} does not follow {trusted[-1][0]} (replayed or reordered)",
                name,
            )
        seen.add(checkpoint.signature)
        trusted.append((name, checkpoint))
    return trusted


class _Walk:
    def __init__(self, anchors: list[tuple[str, Checkpoint]]) -> None:
        self.by_sequence: dict[int, list[tuple[str, Checkpoint]]] = {}
        for name, checkpoint in anchors:
            self.by_sequence.setdefault(checkpoint.sequence, []).append((name, checkpoint))
        self.prev = GENESIS
        self.expected = 1
        self.last_good = 0
        self.checked = 0
        self.recent: OrderedDict[str, int] = OrderedDict()
        self.cut = 0  # the row a purge cut the chain at (0: the chain starts at row 1)
        self.cut_recorded = False  # the purge's own row, naming that cut, was found

    def start(self, first: AuditEvent) -> None:
        """The chain's start: row 1 after the genesis hash, or a purge's cut. Only a purge's
        checkpoint anchors a cut (a scheduled one at the same row would let rows be deleted
        up to any checkpoint), and the purge's own ``audit.purge`` row must follow it
        (:meth:`finish`)."""
        if first.sequence == 1:
            return
        cut = first.sequence - 1
        anchors = [
            (name, cp) for name, cp in self.by_sequence.get(cut, []) if cp.hash == first.prev_hash
        ]
        if not anchors:
            raise _Break(1, f"rows 1-{cut} are missing and no checkpoint anchors the cut")
        if not any(cp.reason == PURGE for _, cp in anchors):
            name = anchors[0][0]
            raise _Break(
                1,
                f"rows 1-{cut} are missing: checkpoint {name} at row {cut} was not written by "
                "a purge",
                name,
            )
        self.prev, self.expected, self.last_good = first.prev_hash, first.sequence, cut
        self.cut = cut

    def step(self, event: AuditEvent) -> None:
        if event.sequence != self.expected:
            raise _Break(self.expected, f"row {self.expected} is missing (deleted)")
        if event.prev_hash != self.prev:
            earlier = self.recent.get(event.prev_hash)
            if earlier is not None:
                raise _Break(
                    earlier + 1,
                    f"row {earlier + 1} was inserted: row {event.sequence} links to row {earlier}",
                )
            if chain_hash(event.prev_hash, event) == event.hash:
                raise _Break(
                    event.sequence - 1,
                    f"row {event.sequence - 1} was replaced: row {event.sequence} does not "
                    "link to it",
                )
            raise _Break(event.sequence, "link to the previous row is broken")
        if chain_hash(self.prev, event) != event.hash:
            raise _Break(event.sequence, "row content does not match its hash (edited or moved)")
        for name, checkpoint in self.by_sequence.get(event.sequence, []):
            if checkpoint.hash != event.hash:
                raise _Break(
                    self.last_good + 1,
                    f"rows after {self.last_good} were rewritten: row {event.sequence} does "
                    f"not match checkpoint {name}",
                    name,
                )
            self.last_good = event.sequence
        if self.cut and _records_the_purge(event, self.cut):
            self.cut_recorded = True
        self.recent[event.hash] = event.sequence
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        self.prev = event.hash
        self.expected += 1
        self.checked += 1

    def finish(self, head_sequence: int) -> None:
        if self.cut and not self.cut_recorded:
            raise _Break(
                1,
                f"rows 1-{self.cut} are missing: a purge checkpoint anchors the cut, but no "
                f"{PURGE_EVENT} row records it (the purge's row was deleted)",
            )
        beyond = [
            (name, cp)
            for items in self.by_sequence.values()
            for name, cp in items
            if cp.sequence >= self.expected
        ]
        if beyond:
            name, checkpoint = max(beyond, key=lambda item: item[1].sequence)
            raise _Break(
                self.expected,
                f"rows from {self.expected} on are missing (truncated tail): checkpoint {name} "
                f"signed row {checkpoint.sequence}",
                name,
            )
        if head_sequence >= self.expected:
            raise _Break(
                self.expected,
                f"rows from {self.expected} on are missing (truncated tail): the chain head "
                f"is at row {head_sequence}",
            )


def _records_the_purge(event: AuditEvent, cut: int) -> bool:
    details = event.details if isinstance(event.details, dict) else {}
    return event.event_type == PURGE_EVENT and details.get("cut") == cut


def verify_chain(session: Session, settings: Settings | None = None) -> ChainReport:
    """Walk the chain in sequence order, checking every link and every checkpoint."""
    settings = settings or get_settings()
    try:
        anchors = trusted_checkpoints(settings)
    except _Break as exc:
        return ChainReport(0, exc.sequence, exc.reason, 0, exc.checkpoint)
    # The head is read before the rows: a row committed meanwhile cannot look missing.
    head_sequence = session.scalar(select(AuditChainHead.sequence).where(AuditChainHead.id == 1))
    walk = _Walk(anchors)
    try:
        last = 0
        while True:
            rows = session.scalars(
                select(AuditEvent)
                .where(AuditEvent.sequence > last)
                .order_by(AuditEvent.sequence)
                .limit(settings.audit_verify_batch)
            ).all()
            if not rows:
                break
            if last == 0:
                walk.start(rows[0])
            for event in rows:
                walk.step(event)
            last = rows[-1].sequence
        walk.finish(head_sequence or 0)
    except _Break as exc:
        return ChainReport(walk.checked, exc.sequence, exc.reason, len(anchors), exc.checkpoint)
    return ChainReport(walk.checked, None, None, len(anchors))


def verify_and_record(session: Session, settings: Settings | None = None) -> ChainReport:
    """Verify the chain and record the result for monitoring (the latest row is what the
    "Audit chain broken" rule and ``herald_audit_chain_ok`` read)."""
    report = verify_chain(session, settings)
    session.add(
        AuditVerification(
            ok=report.ok,
            checked=report.checked,
            first_break=report.first_break,
            reason=report.reason,
        )
    )
    session.flush()
    if not report.ok:
        log.error("audit.chain_broken", first_break=report.first_break, reason=report.reason)
    return report
