"""The sandbox's core: state, token lifecycle, and the contract a network module plugs into.

The sandbox is one ASGI app (:mod:`herald.sandbox.app`) that serves every emulated
network under ``/<network>/...`` and a control API under ``/_sandbox/``. This module holds
what every network shares; each network lives in its own module and only describes itself.

How a network module plugs in
-----------------------------
1. Subclass :class:`SandboxNetwork` in ``herald/sandbox/<network>.py``::

       class Mastodon(SandboxNetwork):
           name = "mastodon"
           access_ttl_s = None          # tokens never expire
           issues_refresh = False
           default_rate_limit = RateLimit(limit=300, window_s=300)

           def error_response(self, err: NetworkError) -> Response:
               return JSONResponse({"error": err.message}, err.status, headers=err.headers)

           def rate_limit_headers(self, w: RateWindow) -> dict[str, str]:
               return {"X-RateLimit-Limit": str(w.limit), ...}

           def routes(self, sb: Sandbox) -> APIRouter:
               router = APIRouter()

               @router.post("/api/v1/statuses")
               async def create(request: Request) -> Response:
                   account = self.require_account(request)   # or your own auth check
                   body = await read_json_or_form(request)
                   post, _ = sb.create_post(self.name, account.account_id, text, ...)
                   return JSONResponse({...})

               return router

   Paths in the router are relative to ``/<network>``. Raise :class:`NetworkError` anywhere
   in a handler: the core renders it with your ``error_response``. Malformed requests,
   unknown paths, wrong methods and crashes are rendered the same way, never as a bare 500.
2. Add one line to ``NETWORKS`` in :mod:`herald.sandbox.app`.

What the core does around every network request, so modules need not:

* reads the credential (:meth:`SandboxNetwork.credential`: ``Authorization: Bearer`` by
  default; override for tokens in paths or query strings) and resolves it to an
  :class:`AuthContext` (``valid``, ``expired``, ``revoked``, ``unknown``, ``missing``) that
  handlers read with :func:`request_auth`; the handler decides how its network refuses;
* journals the request (method, network, path without secrets or query, account, status,
  whether it carried a cookie);
* sets a session cookie on every answer to a known token, as real networks do (Reddit's
  ``session_tracker`` and ``loid``, LinkedIn's ``lidc``): a client that kept it would carry
  one account's cookie into the next account's call, so the journal says whether one came back;
* counts the request against the token's rate-limit window and answers 429 with
  :meth:`SandboxNetwork.rate_limited_response` once it is exceeded; adds
  :meth:`SandboxNetwork.rate_limit_headers` to every answer to a valid token;
* applies injected faults (see :mod:`herald.sandbox.faults`).

State lives in :class:`~.store.Sandbox` (records in :mod:`.records`); this module re-exports
everything a network module needs, so ``from herald.sandbox.core import ...`` is
the one import. Tokens: :meth:`Sandbox.issue_tokens` creates an access/refresh pair in a new family;
:meth:`Sandbox.refresh` rotates (or not, per the network's class attributes) and, on reuse of
a spent refresh token, revokes the whole family. :meth:`Sandbox.issue_code` /
:meth:`Sandbox.redeem_code` implement authorization codes with PKCE (S256 and plain).
Token endpoints check the OAuth client a request authenticates as (:func:`token_client`)
with :meth:`Sandbox.client_accepted` — any named client, or exactly the one registered through
the control API — and refuse a missing or wrong one in their network's own shape.
Time is :meth:`Sandbox.now`, which the control API can advance to expire tokens.
"""

from __future__ import annotations

import base64
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.records import (
    AuthContext,
    IssuedToken,
    JournalEntry,
    RefreshRefused,
    SandboxAccount,
    SandboxPost,
    TokenPair,
    TokenStatus,
)
from herald.sandbox.store import Sandbox, pkce_s256

# Path segments that are secrets: Telegram's /bot<token>/, a Discord webhook's token.
_SECRET_SEGMENT = re.compile(r"^(/bot)[^/]+|(/webhooks/[^/]+/)[^/]+")

__all__ = [
    "AuthContext",
    "IssuedToken",
    "JournalEntry",
    "NetworkError",
    "RefreshRefused",
    "Sandbox",
    "SandboxAccount",
    "SandboxNetwork",
    "SandboxPost",
    "TokenPair",
    "TokenStatus",
    "basic_client",
    "pkce_s256",
    "read_form",
    "read_json",
    "request_auth",
    "token_client",
]

# --------------------------------------------------------------------------------------------
# Errors a network handler raises
# --------------------------------------------------------------------------------------------


class NetworkError(Exception):
    """An answer in the network's own error shape. ``code`` is the network's error code
    (``ExpiredToken``, ``DUPLICATE_POST``...); ``extra`` holds any other fields it needs."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.message = message or _phrase(status)
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status} {self.message}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# --------------------------------------------------------------------------------------------
# The network contract
# --------------------------------------------------------------------------------------------


class SandboxNetwork(ABC):
    """Base class of an emulated network. Override ``routes`` and ``error_response``."""

    name: ClassVar[str]
    access_ttl_s: ClassVar[float | None] = 7200.0
    refresh_ttl_s: ClassVar[float | None] = None
    issues_refresh: ClassVar[bool] = True
    rotates_refresh: ClassVar[bool] = True
    #: Reusing a spent refresh token revokes its whole family (access tokens included).
    reuse_revokes_family: ClassVar[bool] = True
    #: A spent refresh token keeps working this long (Bluesky's 2 h grace).
    refresh_grace_s: ClassVar[float] = 0.0
    default_rate_limit: ClassVar[RateLimit | None] = None
    #: Switches for facts PROVIDERS.md marks unconfirmed; set with PUT /_sandbox/options/<net>.
    default_options: ClassVar[Mapping[str, Any]] = {}

    @abstractmethod
    def routes(self, sb: Sandbox) -> APIRouter:
        """The network's endpoints, with paths relative to ``/<network>``."""

    def error_response(self, err: NetworkError) -> Response:
        body: dict[str, Any] = {"error": err.code or err.message, "message": err.message}
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        return {}

    def rate_limited_response(self, window: RateWindow) -> Response:
        headers = self.rate_limit_headers(window)
        return self.error_response(NetworkError(429, "Too Many Requests", headers=headers))

    def credential(self, request: Request) -> str | None:
        """The access token this request carries (Bearer by default)."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def redact(self, path: str) -> str:
        """The path as the journal shows it: no secrets, no query."""
        path = path.split("?", 1)[0]
        return _SECRET_SEGMENT.sub(lambda m: (m.group(1) or m.group(2)) + "***", path)

    def new_account_id(self, seq: int) -> str:
        return str(1_000_000 + seq)

    def account_id_problem(self, account_id: str) -> str | None:
        """Why ``account_id`` cannot be this network's account id (seeding refuses it), or
        None. Networks with a fixed id format say so."""
        return None

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        """Store ``text`` as if the account had published it through this network's own
        endpoint (the control API's ``POST /_sandbox/posts``: a busy account in one call).
        Networks whose posts carry more than text override this with their endpoint's code."""
        post, _ = sb.create_post(self.name, account.account_id, text)
        return post


def request_auth(request: Request) -> AuthContext:
    """The credential the core resolved for this request."""
    auth = request.scope.get("sandbox_auth")
    return auth if isinstance(auth, AuthContext) else AuthContext(TokenStatus.MISSING)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 :class:`NetworkError`."""
    try:
        body = await request.json()
    except ValueError:
        raise NetworkError(400, "Request body is not valid JSON", code="InvalidRequest") from None
    if not isinstance(body, dict):
        raise NetworkError(400, "Request body must be a JSON object", code="InvalidRequest")
    return body


async def read_form(request: Request) -> dict[str, str]:
    """A form-encoded body as a flat mapping (last value wins), or a 400."""
    try:
        form = await request.form()
    except Exception:
        raise NetworkError(400, "Malformed form body", code="invalid_request") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def basic_client(request: Request) -> tuple[str, str] | None:
    """The (client id, secret) of an ``Authorization: Basic`` header, if it has a usable one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep and client_id else None


def token_client(request: Request, form: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The OAuth client a token request authenticates as: HTTP Basic
    (``client_secret_basic``), else ``client_id`` / ``client_secret`` in the form
    (``client_secret_post``), as RFC 6749 §2.3.1 allows."""
    basic = basic_client(request)
    if basic is not None:
        return basic
    return form.get("client_id") or None, form.get("client_secret") or None
