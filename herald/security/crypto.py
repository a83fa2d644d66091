"""Provider tokens at rest: AES-256-GCM under a key ring.

A sealed token reads ``v1.<key id>.<nonce>.<ciphertext>`` (base64url parts). The associated
data binds it to its row — workspace, provider and integration id — so a ciphertext copied into
another row, or another workspace, fails to open. Each ciphertext names the key that sealed it:
keys rotate by adding a new first key to ``HERALD_TOKEN_KEYS`` and re-sealing at leisure, while
the old keys stay in the ring to open what they sealed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import uuid
from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from herald.settings import Settings

VERSION = "v1"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class CryptoError(Exception):
    """A key ring or ciphertext problem. Messages name keys and rows, never material."""


class DecryptionError(CryptoError):
    """The ciphertext is malformed, sealed by an unknown key, or bound to another row."""

    code: ClassVar[str] = "token_unreadable"  # as posts and attempts record it


class UnknownKey(DecryptionError):
    """Sealed under a well-formed key id this process's ring lacks: its ``HERALD_TOKEN_KEYS``
    is behind the process that sealed it (a key added there first, mid-rollout) or a key was
    removed while ciphertexts still used it. Herald's configuration, not the ciphertext:
    callers try again later rather than judge the token (or the grant) dead."""

    code: ClassVar[str] = "token_key_unknown"  # as posts, attempts and refresh attempts record it


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A fresh 256-bit key, base64url, ready for ``HERALD_TOKEN_KEYS``."""
    return _b64e(os.urandom(32))


@dataclass(frozen=True, slots=True)
class TokenBinding:
    """What a token belongs to; the associated data of its ciphertext."""

    workspace_id: uuid.UUID | str
    provider: str
    integration_id: uuid.UUID | str

    def aad(self) -> bytes:
        return f"herald-token|{self.workspace_id}|{self.provider}|{self.integration_id}".encode()


class KeyRing:
    """Named 256-bit keys; the first one seals, every one opens what it sealed."""

    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise CryptoError(f"active key {active!r} is not in the ring")
        for position, (kid, key) in enumerate(keys.items(), start=1):
            if not _KID.match(kid):
                # Never echoed: an entry written the wrong way round ("key:kid") puts the key
                # where its id goes, and this message reaches logs and health.
                raise CryptoError(
                    f"key id of entry {position} ({len(kid)} characters) must be 1-32 of "
                    "[A-Za-z0-9_-]; entries read 'kid:base64key'"
                )
            if len(key) != 32:
                raise CryptoError(f"key {kid!r} must be 32 bytes, got {len(key)}")
        self._aead = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Read ``kid:base64key[,kid:base64key…]``; the first key is the active one."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kid, sep, material = item.partition(":")
            if not sep:
                raise CryptoError("HERALD_TOKEN_KEYS entries must read 'kid:base64key'")
            try:
                keys[kid] = _b64d(material)
            except (binascii.Error, ValueError):
                raise CryptoError(f"key {kid!r} in HERALD_TOKEN_KEYS is not base64") from None
        if not keys:
            raise CryptoError("HERALD_TOKEN_KEYS holds no key")
        return cls(keys, next(iter(keys)))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return _ring_for(settings.token_keys.get_secret_value())

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._aead)

    def seal(self, plaintext: str, binding: TokenBinding) -> str:
        nonce = os.urandom(12)
        sealed = self._aead[self.active].encrypt(nonce, plaintext.encode(), binding.aad())
        return f"{VERSION}.{self.active}.{_b64e(nonce)}.{_b64e(sealed)}"

    def open(self, ciphertext: str, binding: TokenBinding) -> str:
        kid, nonce, sealed = self._split(ciphertext)
        aead = self._aead.get(kid)
        if aead is None:
            if _KID.match(kid):
                raise UnknownKey(
                    f"token sealed with key {kid!r}, which this process's HERALD_TOKEN_KEYS lacks"
                )
            raise DecryptionError(f"token sealed with unknown key {kid!r}")
        try:
            return aead.decrypt(nonce, sealed, binding.aad()).decode()
        except InvalidTag:
            raise DecryptionError(
                f"token does not open for integration {binding.integration_id}"
                " (tampered, or copied from another row)"
            ) from None

    def reseal(self, ciphertext: str, binding: TokenBinding) -> str:
        """The same token under the active key (a no-op copy if already under it)."""
        if key_id_of(ciphertext) == self.active:
            return ciphertext
        return self.seal(self.open(ciphertext, binding), binding)

    @staticmethod
    def _split(ciphertext: str) -> tuple[str, bytes, bytes]:
        parts = ciphertext.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise DecryptionError("not a Herald token ciphertext")
        try:
            return parts[1], _b64d(parts[2]), _b64d(parts[3])
        except (binascii.Error, ValueError):
            raise DecryptionError("token ciphertext is not valid base64") from None


@functools.lru_cache(maxsize=4)
def _ring_for(spec: str) -> KeyRing:
    return KeyRing.parse(spec)


def key_id_of(ciphertext: str) -> str:
    parts = ciphertext.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise DecryptionError("not a Herald token ciphertext")
    return parts[1]
