"""The sandbox's state records: accounts, issued tokens, posts, journal entries.

Plain dataclasses with ``view()`` methods for the control API; :class:`~.store.Sandbox`
owns the collections they live in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class SandboxAccount:
    network: str
    account_id: str
    handle: str
    created_at: datetime
    password: str | None = None  # Bluesky-style app password, when the network uses one
    settings: dict[str, Any] = field(default_factory=dict)
    token_prefix: str = ""  # starts every token issued to the account (canary tests)

    def view(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "account_id": self.account_id,
            "handle": self.handle,
            "created_at": self.created_at.isoformat(),
            "settings": self.settings,
        }


@dataclass
class IssuedToken:
    value: str
    kind: Literal["access", "refresh"]
    network: str
    account_id: str
    family: str
    issued_at: datetime
    expires_at: datetime | None
    scopes: tuple[str, ...] = ()
    used_at: datetime | None = None
    revoked: bool = False
    successor: str | None = None  # refresh: the refresh token issued when this one was spent

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class TokenPair:
    access: IssuedToken
    refresh: IssuedToken | None

    def view(self, now: datetime) -> dict[str, Any]:
        """OAuth-style token response fields (networks reshape them as they need)."""
        out: dict[str, Any] = {
            "access_token": self.access.value,
            "token_type": "bearer",
            "scope": " ".join(self.access.scopes),
            "expires_at": self.access.expires_at.isoformat() if self.access.expires_at else None,
        }
        if self.access.expires_at is not None:
            out["expires_in"] = int((self.access.expires_at - now).total_seconds())
        if self.refresh is not None:
            out["refresh_token"] = self.refresh.value
            if self.refresh.expires_at is not None:
                out["refresh_token_expires_in"] = int(
                    (self.refresh.expires_at - now).total_seconds()
                )
        return out


@dataclass
class SandboxPost:
    network: str
    account_id: str
    id: str
    text: str
    url: str
    created_at: datetime
    idempotency_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: Creation order, so posts made within one clock tick still list newest first.
    seq: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "account_id": self.account_id,
            "id": self.id,
            "text": self.text,
            "url": self.url,
            "created_at": self.created_at.isoformat(),
            "idempotency_key": self.idempotency_key,
            "data": self.data,
        }


class TokenStatus(StrEnum):
    VALID = "valid"
    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class AuthContext:
    status: TokenStatus
    token: IssuedToken | None = None
    account: SandboxAccount | None = None


class RefreshRefused(Exception):
    """``reason`` is ``unknown``, ``expired``, ``revoked`` or ``reused`` (family revoked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AuthCode:
    network: str
    account_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    scopes: tuple[str, ...]
    expires_at: datetime


@dataclass
class JournalEntry:
    seq: int
    at: datetime
    method: str
    network: str
    path: str
    account_id: str | None
    status: int | None = None  # None when the connection was dropped or timed out
    fault: str | None = None
    applied: bool = False
    crashed: bool = False
    duration_ms: float = 0.0
    #: Whether the request carried a ``Cookie`` header (never its value).
    cookie: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "method": self.method,
            "network": self.network,
            "path": self.path,
            "account_id": self.account_id,
            "status": self.status,
            "fault": self.fault,
            "applied": self.applied,
            "crashed": self.crashed,
            "cookie": self.cookie,
            "duration_ms": round(self.duration_ms, 1),
        }
