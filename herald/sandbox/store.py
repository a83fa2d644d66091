"""The sandbox's state store: accounts, token lifecycle (expiry, rotation, family
revocation), authorization codes with PKCE, posts with idempotency keys, and the journal.
One instance is shared by every network; it is thread-safe so tests can read it in-process.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from herald.sandbox.faults import FaultInjector, RateLimiter
from herald.sandbox.media import SandboxUpload
from herald.sandbox.records import (
    AuthCode,
    AuthContext,
    IssuedToken,
    JournalEntry,
    RefreshRefused,
    SandboxAccount,
    SandboxPost,
    TokenPair,
    TokenStatus,
)

if TYPE_CHECKING:
    from herald.sandbox.core import SandboxNetwork

#: The journal keeps the newest entries only; ``seq`` keeps counting.
JOURNAL_LIMIT = 50_000


def pkce_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Sandbox:
    """All sandbox state, shared by every network. Thread-safe: tests read it in-process."""

    def __init__(self, networks: Mapping[str, SandboxNetwork]) -> None:
        self.networks = dict(networks)
        self.faults = FaultInjector()
        self.rate_limiter = RateLimiter()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.clock_offset = timedelta(0)
            self.accounts: dict[tuple[str, str], SandboxAccount] = {}
            self.tokens: dict[str, IssuedToken] = {}
            self.posts: list[SandboxPost] = []
            self.uploads: dict[str, SandboxUpload] = {}
            self.journal: list[JournalEntry] = []
            self.options: dict[str, dict[str, Any]] = {n: {} for n in self.networks}
            self._idempotency: dict[tuple[str, str, str], tuple[str, datetime]] = {}
            self._codes: dict[str, AuthCode] = {}
            self.clients: dict[str, tuple[str, str | None]] = {}
            self._journal_seq = itertools.count(1)
            self.faults.clear()
            self.rate_limiter.clear()
            self.rate_limiter.limits = {
                name: net.default_rate_limit
                for name, net in self.networks.items()
                if net.default_rate_limit is not None
            }

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self.clock_offset += timedelta(seconds=seconds)
            return self.now()

    def next_id(self) -> int:
        return next(self._ids)

    def option(self, network: str, key: str) -> Any:
        with self._lock:
            opts = self.options.get(network, {})
            if key in opts:
                return opts[key]
        return self.networks[network].default_options[key]

    # -- OAuth clients -------------------------------------------------------------------------

    def register_client(self, network: str, client_id: str, client_secret: str | None) -> None:
        """From now on the network's token endpoints accept this client only."""
        with self._lock:
            self.clients[network] = (client_id, client_secret)

    def forget_client(self, network: str) -> None:
        with self._lock:
            self.clients.pop(network, None)

    def client_accepted(
        self, network: str, client_id: str | None, client_secret: str | None, *, secret: bool
    ) -> bool:
        """Whether a token request's client authenticates: the registered client exactly,
        or, when none is registered, any non-empty id (and secret, where ``secret``)."""
        if not client_id or (secret and not client_secret):
            return False
        with self._lock:
            registered = self.clients.get(network)
        if registered is None:
            return True
        return (client_id, client_secret or None) == (registered[0], registered[1] or None)

    def client_secret_accepted(self, network: str, client_secret: str | None) -> bool:
        """For endpoints that take only a secret (the app is implied by the token)."""
        with self._lock:
            registered = self.clients.get(network)
        if not client_secret:
            return False
        return registered is None or client_secret == registered[1]

    # -- accounts and tokens -------------------------------------------------------------------

    def create_account(
        self,
        network: str,
        *,
        account_id: str | None = None,
        handle: str | None = None,
        password: str | None = None,
        settings: Mapping[str, Any] | None = None,
        token_prefix: str = "",
    ) -> SandboxAccount:
        net = self.networks[network]
        with self._lock:
            seq = self.next_id()
            account_id = account_id or net.new_account_id(seq)
            account = SandboxAccount(
                network=network,
                account_id=account_id,
                handle=handle or f"user{seq}",
                created_at=self.now(),
                password=password,
                settings=dict(settings or {}),
                token_prefix=token_prefix,
            )
            self.accounts[(network, account_id)] = account
            return account

    def account(self, network: str, account_id: str) -> SandboxAccount | None:
        with self._lock:
            return self.accounts.get((network, account_id))

    def find_account(self, network: str, **match: str) -> SandboxAccount | None:
        """The first account of ``network`` whose attributes equal ``match`` (handle=...)."""
        with self._lock:
            for account in self.accounts.values():
                if account.network == network and all(
                    getattr(account, k) == v for k, v in match.items()
                ):
                    return account
        return None

    def pick_account(self, network: str, wanted: str | None = None) -> SandboxAccount:
        """Who an emulated consent screen signs in as: ``wanted`` if it exists, else the
        newest account of the network, else a new one."""
        with self._lock:
            if wanted and (network, wanted) in self.accounts:
                return self.accounts[(network, wanted)]
            mine = [a for a in self.accounts.values() if a.network == network]
            return mine[-1] if mine else self.create_account(network)

    def issue_tokens(
        self,
        network: str,
        account_id: str,
        *,
        scopes: tuple[str, ...] = (),
        access_ttl_s: float | None = None,
        refresh_ttl_s: float | None = None,
        family: str | None = None,
        refresh_expires_at: datetime | None = None,
        with_refresh: bool | None = None,
    ) -> TokenPair:
        """A new access token (and refresh token when the network issues them).
        TTLs default to the network's; pass ``family`` to continue a rotation chain."""
        net = self.networks[network]
        now = self.now()
        a_ttl = access_ttl_s if access_ttl_s is not None else net.access_ttl_s
        r_ttl = refresh_ttl_s if refresh_ttl_s is not None else net.refresh_ttl_s
        family = family or secrets.token_hex(8)
        with self._lock:
            holder = self.accounts.get((network, account_id))
            prefix = f"{holder.token_prefix if holder else ''}{network}"
            access = IssuedToken(
                value=f"{prefix}-at-{secrets.token_urlsafe(24)}",
                kind="access",
                network=network,
                account_id=account_id,
                family=family,
                issued_at=now,
                expires_at=now + timedelta(seconds=a_ttl) if a_ttl is not None else None,
                scopes=scopes,
            )
            self.tokens[access.value] = access
            refresh = None
            if net.issues_refresh if with_refresh is None else with_refresh:
                if refresh_expires_at is None and r_ttl is not None:
                    refresh_expires_at = now + timedelta(seconds=r_ttl)
                refresh = IssuedToken(
                    value=f"{prefix}-rt-{secrets.token_urlsafe(24)}",
                    kind="refresh",
                    network=network,
                    account_id=account_id,
                    family=family,
                    issued_at=now,
                    expires_at=refresh_expires_at,
                    scopes=scopes,
                )
                self.tokens[refresh.value] = refresh
            return TokenPair(access, refresh)

    def authenticate(self, network: str, value: str | None) -> AuthContext:
        if not value:
            return AuthContext(TokenStatus.MISSING)
        with self._lock:
            token = self.tokens.get(value)
            if token is None or token.network != network or token.kind != "access":
                return AuthContext(TokenStatus.UNKNOWN)
            account = self.accounts.get((network, token.account_id))
            if token.revoked or account is None:
                return AuthContext(TokenStatus.REVOKED, token, account)
            if token.expired(self.now()):
                return AuthContext(TokenStatus.EXPIRED, token, account)
            return AuthContext(TokenStatus.VALID, token, account)

    def refresh(self, network: str, value: str) -> TokenPair:
        """Spend a refresh token. Raises :class:`RefreshRefused` with the reason."""
        net = self.networks[network]
        now = self.now()
        with self._lock:
            token = self.tokens.get(value)
            if token is None or token.network != network or token.kind != "refresh":
                raise RefreshRefused("unknown")
            if token.revoked:
                raise RefreshRefused("revoked")
            if token.expired(now):
                raise RefreshRefused("expired")
            if token.used_at is not None and net.rotates_refresh:
                grace_end = token.used_at + timedelta(seconds=net.refresh_grace_s)
                if now >= grace_end:
                    if net.reuse_revokes_family:
                        self.revoke_family(token.family)
                        raise RefreshRefused("reused")
                    raise RefreshRefused("revoked")
            token.used_at = token.used_at or now
            if not net.rotates_refresh:
                pair = self.issue_tokens(
                    network,
                    token.account_id,
                    scopes=token.scopes,
                    family=token.family,
                    with_refresh=False,
                )
                return TokenPair(pair.access, token)
            pair = self.issue_tokens(
                network, token.account_id, scopes=token.scopes, family=token.family
            )
            token.successor = pair.refresh.value if pair.refresh else None
            return pair

    def revoke_family(self, family: str) -> int:
        with self._lock:
            hit = [t for t in self.tokens.values() if t.family == family and not t.revoked]
            for t in hit:
                t.revoked = True
            return len(hit)

    def revoke(self, value: str) -> bool:
        with self._lock:
            token = self.tokens.get(value)
            if token is None:
                return False
            token.revoked = True
            return True

    def expire_access_tokens(self, network: str, account_id: str) -> int:
        """Make every live access token of the account expired now (tests of AuthExpired)."""
        now = self.now() - timedelta(seconds=1)
        with self._lock:
            hit = [
                t
                for t in self.tokens.values()
                if t.network == network and t.account_id == account_id and t.kind == "access"
            ]
            for t in hit:
                t.expires_at = now
            return len(hit)

    # -- authorization codes -------------------------------------------------------------------

    def issue_code(
        self,
        network: str,
        account_id: str,
        *,
        redirect_uri: str,
        challenge: str | None = None,
        method: str = "S256",
        scopes: tuple[str, ...] = (),
    ) -> str:
        code = secrets.token_urlsafe(18)
        with self._lock:
            self._codes[code] = AuthCode(
                network,
                account_id,
                redirect_uri,
                challenge,
                method,
                scopes,
                self.now() + timedelta(minutes=10),
            )
        return code

    def redeem_code(
        self, network: str, code: str, *, redirect_uri: str | None, verifier: str | None
    ) -> tuple[TokenPair, SandboxAccount]:
        """Single use. Raises :class:`RefreshRefused` (``invalid_grant`` cases) when refused."""
        with self._lock:
            grant = self._codes.pop(code, None)
            if grant is None or grant.network != network or self.now() >= grant.expires_at:
                raise RefreshRefused("invalid_grant")
            if redirect_uri is not None and redirect_uri != grant.redirect_uri:
                raise RefreshRefused("redirect_uri_mismatch")
            if grant.challenge is not None:
                expected = pkce_s256(verifier or "") if grant.method == "S256" else verifier
                if not verifier or expected != grant.challenge:
                    raise RefreshRefused("pkce_mismatch")
            account = self.accounts[(network, grant.account_id)]
            return self.issue_tokens(network, grant.account_id, scopes=grant.scopes), account

    # -- posts ---------------------------------------------------------------------------------

    def create_post(
        self,
        network: str,
        account_id: str,
        text: str,
        *,
        post_id: str | None = None,
        url: str = "",
        idempotency_key: str | None = None,
        key_ttl_s: float = 3600.0,
        data: Mapping[str, Any] | None = None,
    ) -> tuple[SandboxPost, bool]:
        """Store a post. With ``idempotency_key`` seen inside ``key_ttl_s``, return the post
        created under it and False instead of creating a second one."""
        now = self.now()
        with self._lock:
            if idempotency_key is not None:
                seen = self._idempotency.get((network, account_id, idempotency_key))
                if seen is not None and now - seen[1] < timedelta(seconds=key_ttl_s):
                    existing = self.find_post(network, seen[0])
                    if existing is not None:
                        return existing, False
            post = SandboxPost(
                network=network,
                account_id=account_id,
                id=post_id or str(1_860_000_000_000_000_000 + self.next_id()),
                text=text,
                url=url,
                created_at=now,
                idempotency_key=idempotency_key,
                data=dict(data or {}),
                seq=self.next_id(),
            )
            self.posts.append(post)
            if idempotency_key is not None:
                self._idempotency[(network, account_id, idempotency_key)] = (post.id, now)
            return post, True

    # -- media ---------------------------------------------------------------------------------

    def new_upload(
        self,
        network: str,
        account_id: str,
        kind: str,
        *,
        upload_id: str | None = None,
        ttl_s: float | None = None,
        **fields: Any,
    ) -> SandboxUpload:
        now = self.now()
        with self._lock:
            upload = SandboxUpload(
                network,
                account_id,
                upload_id or str(1_900_000_000_000_000_000 + self.next_id()),
                kind,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s) if ttl_s is not None else None,
                **fields,
            )
            self.uploads[upload.id] = upload
            return upload

    def find_upload(self, network: str, upload_id: str) -> SandboxUpload | None:
        with self._lock:
            found = self.uploads.get(upload_id)
        return found if found is not None and found.network == network else None

    def attach(self, uploads: list[SandboxUpload], post: SandboxPost) -> None:
        with self._lock:
            for upload in uploads:
                upload.attached_to.append(post.id)
            post.data["media"] = [
                {"id": u.id, "kind": u.kind, "alt": u.alt, "bytes": u.received} for u in uploads
            ]

    def find_post(self, network: str, post_id: str) -> SandboxPost | None:
        with self._lock:
            for post in self.posts:
                if post.network == network and post.id == post_id:
                    return post
        return None

    def posts_of(self, network: str, account_id: str) -> list[SandboxPost]:
        """Newest first, as the networks list them."""
        with self._lock:
            mine = [p for p in self.posts if p.network == network and p.account_id == account_id]
        return sorted(mine, key=lambda p: (p.created_at, p.seq), reverse=True)

    # -- journal -------------------------------------------------------------------------------

    def journal_start(
        self, method: str, network: str, path: str, account_id: str | None
    ) -> JournalEntry:
        with self._lock:
            entry = JournalEntry(
                seq=next(self._journal_seq),
                at=self.now(),
                method=method,
                network=network,
                path=path,
                account_id=account_id,
            )
            self.journal.append(entry)
            if len(self.journal) > JOURNAL_LIMIT:  # a long-running demo must not grow forever
                del self.journal[: len(self.journal) - JOURNAL_LIMIT]
            return entry
