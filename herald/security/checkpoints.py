"""Signed checkpoints of the audit chain, kept outside the database (like CloudTrail's digest
files).

A checkpoint signs the chain head — ``sequence``, ``hash``, the time and the previous
checkpoint's signature — with an Ed25519 key (``HERALD_AUDIT_SIGNING_KEY``) and is written as
one JSON file to ``HERALD_AUDIT_CHECKPOINT_DIR``. Someone who holds the database but not the
key cannot rewrite or cut the chain without the checkpoints disagreeing; someone who copies an
old checkpoint file to replay it breaks the chain of signatures. Only public keys are needed to
verify: the signing key's own and the older ones in ``HERALD_AUDIT_VERIFY_KEYS``, so the key
rotates without making old checkpoints unverifiable.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.models import AuditEvent, utcnow
from herald.security.audit import GENESIS
from herald.settings import Settings

FORMAT = "herald-audit-checkpoint/1"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class CheckpointError(Exception):
    """A key or checkpoint problem; messages name keys and files, never key material."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pair(item: str, what: str) -> tuple[str, bytes]:
    kid, sep, material = item.strip().partition(":")
    if not sep or not _KID.match(kid):
        raise CheckpointError(f"{what} entries must read 'kid:base64url' (kid [A-Za-z0-9_-])")
    try:
        raw = _b64d(material)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} key {kid!r} is not base64url") from None
    if len(raw) != 32:
        raise CheckpointError(f"{what} key {kid!r} must be 32 bytes, got {len(raw)}")
    return kid, raw


@dataclass(frozen=True, slots=True)
class CheckpointKeys:
    signer: tuple[str, Ed25519PrivateKey] | None
    public: dict[str, Ed25519PublicKey]

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointKeys:
        public: dict[str, Ed25519PublicKey] = {}
        for item in filter(None, (p.strip() for p in settings.audit_verify_keys.split(","))):
            kid, raw = _pair(item, "HERALD_AUDIT_VERIFY_KEYS")
            public[kid] = Ed25519PublicKey.from_public_bytes(raw)
        signer = None
        if settings.audit_signing_key is not None:
            kid, raw = _pair(
                settings.audit_signing_key.get_secret_value(), "HERALD_AUDIT_SIGNING_KEY"
            )
            private = Ed25519PrivateKey.from_private_bytes(raw)
            signer = (kid, private)
            public[kid] = private.public_key()
        return cls(signer, public)


def generate_signing_key(kid: str) -> tuple[str, str]:
    """A new ``(HERALD_AUDIT_SIGNING_KEY value, HERALD_AUDIT_VERIFY_KEYS entry)`` pair."""
    if not _KID.match(kid):
        raise CheckpointError("a key id is 1-32 of [A-Za-z0-9_-]")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{kid}:{_b64e(seed)}", f"{kid}:{_b64e(public)}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    key_id: str
    sequence: int
    hash: str
    signed_at: str
    previous_signature: str | None
    reason: str
    signature: str
    format: str = FORMAT

    def signed_bytes(self) -> bytes:
        body = asdict(self)
        body.pop("signature")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def name(self) -> str:
        """Files sort in signing order: the chain of signatures follows time, not sequence
        (a purge's checkpoint signs an older sequence than the one before it)."""
        stamp = datetime.fromisoformat(self.signed_at).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{stamp}-{self.sequence:012d}-{self.signature[:8]}.json"


def head(session: Session) -> tuple[int, str]:
    """The committed chain's last sequence and hash (0 and the genesis hash when empty)."""
    row = session.execute(
        select(AuditEvent.sequence, AuditEvent.hash).order_by(AuditEvent.sequence.desc()).limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def sign(
    keys: CheckpointKeys,
    sequence: int,
    *,
    chain_hash: str,
    previous: Checkpoint | None,
    reason: str,
    at: datetime | None = None,
) -> Checkpoint:
    if keys.signer is None:
        raise CheckpointError("HERALD_AUDIT_SIGNING_KEY is not set: checkpoints cannot be signed")
    kid, private = keys.signer
    unsigned = Checkpoint(
        key_id=kid,
        sequence=sequence,
        hash=chain_hash,
        signed_at=(at or utcnow()).isoformat(),
        previous_signature=previous.signature if previous else None,
        reason=reason,
        signature="",
    )
    signature = _b64e(private.sign(unsigned.signed_bytes()))
    return Checkpoint(**(asdict(unsigned) | {"signature": signature}))


def signature_ok(checkpoint: Checkpoint, keys: CheckpointKeys) -> bool:
    public = keys.public.get(checkpoint.key_id)
    if public is None or checkpoint.format != FORMAT:
        return False
    try:
        public.verify(_b64d(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def directory(settings: Settings) -> Path:
    if not settings.audit_checkpoint_dir:
        raise CheckpointError("HERALD_AUDIT_CHECKPOINT_DIR is not set")
    return Path(settings.audit_checkpoint_dir)


def load(folder: Path) -> list[tuple[str, Checkpoint | None]]:
    """Every checkpoint file in ``folder`` in name (signing) order, with ``None`` for a file
    that is not a well-formed checkpoint."""
    found: list[tuple[str, Checkpoint | None]] = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            data: Any = json.loads(path.read_text())
            checkpoint = Checkpoint(**data)
            if not isinstance(checkpoint.sequence, int) or checkpoint.sequence < 0:
                raise TypeError
        except (OSError, ValueError, TypeError):
            found.append((path.name, None))
            continue
        found.append((path.name, checkpoint))
    return found


def latest(folder: Path) -> Checkpoint | None:
    valid = [cp for _, cp in load(folder) if cp is not None]
    return max(valid, key=lambda cp: cp.signed_at, default=None)


def write(
    session: Session,
    settings: Settings,
    *,
    reason: str = "scheduled",
    at_sequence: tuple[int, str] | None = None,
) -> Checkpoint:
    """Sign the chain head (or ``at_sequence``, a purge's cut) and write it next to the
    previous checkpoint; the file appears whole (written aside, then renamed)."""
    keys = CheckpointKeys.from_settings(settings)
    folder = directory(settings)
    folder.mkdir(parents=True, exist_ok=True)
    sequence, chain_hash = at_sequence or head(session)
    checkpoint = sign(keys, sequence, chain_hash=chain_hash, previous=latest(folder), reason=reason)
    target = folder / checkpoint.name
    temporary = folder / f".{checkpoint.name}.tmp"
    temporary.write_text(json.dumps(asdict(checkpoint), indent=2, sort_keys=True) + "\n")
    os.replace(temporary, target)
    return checkpoint
