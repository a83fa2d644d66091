"""The sandbox ASGI app: a dispatcher that wraps every network with auth resolution,
journal, rate limits and faults, plus the control API under ``/_sandbox/``.

Adding a network: write ``herald/sandbox/<name>.py`` (see :mod:`.core`) and add
one line to :data:`NETWORKS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.sandbox.control import control_api
from herald.sandbox.core import (
    JournalEntry,
    NetworkError,
    Sandbox,
    SandboxNetwork,
    TokenStatus,
)
from herald.sandbox.faults import FaultSpec, RateWindow

#: module path → class name of every emulated network. One line per network.
NETWORKS: tuple[tuple[str, str], ...] = (
    ("herald.sandbox.x", "XNetwork"),
    ("herald.sandbox.linkedin", "LinkedInNetwork"),
    ("herald.sandbox.mastodon", "MastodonNetwork"),
    ("herald.sandbox.bluesky", "BlueskyNetwork"),
    ("herald.sandbox.threads", "ThreadsNetwork"),
    ("herald.sandbox.telegram", "TelegramNetwork"),
    ("herald.sandbox.discord", "DiscordNetwork"),
    ("herald.sandbox.reddit", "RedditNetwork"),
)

#: The cookie set on every answer to a known token (see :mod:`.core`).
SESSION_COOKIE = "sandbox_session"


def session_cookie(account_id: str) -> str:
    """A cookie naming the account (by a digest: an id may hold what a cookie cannot)."""
    return f"{SESSION_COOKIE}={hashlib.sha256(account_id.encode()).hexdigest()[:16]}; Path=/"


#: Called with the request's ASGI scope to abort its TCP connection; True when it did.
DropHook = Callable[[Scope], bool]


def load_networks(
    specs: Iterable[tuple[str, str]] = NETWORKS, *, skip_missing: bool = True
) -> dict[str, SandboxNetwork]:
    """Instantiate the listed networks. A module not written yet is skipped, not fatal."""
    out: dict[str, SandboxNetwork] = {}
    for module_name, class_name in specs:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if skip_missing and exc.name == module_name:
                continue
            raise
        network: SandboxNetwork = getattr(module, class_name)()
        out[network.name] = network
    return out


def _network_app(network: SandboxNetwork, sb: Sandbox) -> FastAPI:
    # No native tracing: a fake network's spans are not Herald's (in tests and the demo the
    # sandbox shares Herald's process and tracer provider).
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry={"tracing": False})
    app.include_router(network.routes(sb))

    async def on_network_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, NetworkError)
        return network.error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        return network.error_response(NetworkError(400, "Malformed request", code="InvalidRequest"))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return network.error_response(NetworkError(exc.status_code, str(exc.detail)))

    app.add_exception_handler(NetworkError, on_network_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    return app


class _Captured:
    """A response held back so the dispatcher can add headers or replace it."""

    def __init__(self) -> None:
        self.start: Message | None = None
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    @property
    def status(self) -> int | None:
        return int(self.start["status"]) if self.start else None


class SandboxApp:
    """The ASGI entry point. ``drop_hook`` is set by the server to abort connections."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.drop_hook: DropHook | None = None
        self._apps = {name: _network_app(net, sandbox) for name, net in sandbox.networks.items()}
        self._control = control_api(sandbox)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            await self._control(scope, receive, send)
            return
        name, _, rest = path.lstrip("/").partition("/")
        network = self.sandbox.networks.get(name)
        if network is None:
            response = JSONResponse({"error": "unknown network", "network": name}, 404)
            await response(scope, receive, send)
            return
        await self._dispatch(network, scope, "/" + rest, receive, send)

    async def _dispatch(
        self, network: SandboxNetwork, scope: Scope, sub_path: str, receive: Receive, send: Send
    ) -> None:
        sb = self.sandbox
        started = time.perf_counter()
        method: str = scope["method"]
        request = Request(scope)
        auth = sb.authenticate(network.name, network.credential(request))
        account_id = auth.token.account_id if auth.token else None
        entry = sb.journal_start(method, network.name, network.redact(sub_path), account_id)
        entry.cookie = "cookie" in request.headers
        sub_scope = dict(scope, path=sub_path, raw_path=sub_path.encode(), sandbox_auth=auth)
        try:
            window = None
            if auth.status is TokenStatus.VALID and auth.token is not None:
                window = sb.rate_limiter.hit(network.name, auth.token.value, sb.now())
            if window is not None and window.exceeded:
                entry.fault = "rate_limited"
                await self._send(network.rate_limited_response(window), entry, scope, send)
                return
            plan = sb.faults.plan(network.name, account_id, method, sub_path)
            if plan.latency_ms:
                await asyncio.sleep(plan.latency_ms / 1000)
            fault = plan.fault
            if fault is not None:
                entry.fault, entry.applied = fault.kind, fault.applied
                if fault.echo:
                    echoed = await _echo(fault, Request(scope, receive))
                    fault = fault.model_copy(update={"message": echoed})
                if not fault.applied:
                    await self._fault(network, fault, entry, scope, send)
                    return
            captured = _Captured()
            try:
                await self._apps[network.name](sub_scope, receive, captured.send)
            except Exception:
                entry.crashed = True
                err = NetworkError(500, "sandbox handler crashed")
                await self._send(network.error_response(err), entry, scope, send)
                return
            if fault is not None:
                await self._fault(network, fault, entry, scope, send)
                return
            headers = network.rate_limit_headers(window) if window is not None else {}
            if auth.token is not None:
                headers["set-cookie"] = session_cookie(auth.token.account_id)
            await self._send_captured(captured, headers, entry, send)
        finally:
            entry.duration_ms = (time.perf_counter() - started) * 1000

    async def _fault(
        self,
        network: SandboxNetwork,
        fault: FaultSpec,
        entry: JournalEntry,
        scope: Scope,
        send: Send,
    ) -> None:
        if fault.kind == "drop":
            await self._drop(scope, send)
            return
        if fault.kind == "timeout":
            await asyncio.sleep(fault.ms / 1000)
            err = NetworkError(504, fault.message or "Gateway Timeout", code=fault.code)
            await self._send(network.error_response(err), entry, scope, send)
            return
        if fault.kind == "rate_limit":
            limit = self.sandbox.rate_limiter.limits.get(network.name)
            window_s = limit.window_s if limit else 900
            reset_at = self.sandbox.now().replace(microsecond=0) + timedelta(seconds=window_s)
            w = RateWindow(
                limit=limit.limit if limit else 1,
                remaining=0,
                reset_at=reset_at,
                window_s=window_s,
                exceeded=True,
            )
            await self._send(network.rate_limited_response(w), entry, scope, send)
            return
        if fault.kind == "garble" and (fault.repeat > 1 or fault.ms):
            await self._flood(fault, entry, send)
            return
        if fault.kind == "garble":
            garbled = Response(fault.body, fault.status or 200, media_type="application/json")
            await self._send(garbled, entry, scope, send)
            return
        err = NetworkError(fault.status or 500, fault.message, code=fault.code)
        await self._send(network.error_response(err), entry, scope, send)

    async def _flood(self, fault: FaultSpec, entry: JournalEntry, send: Send) -> None:
        """An answer of ``body`` sent ``repeat`` times over, chunked as it is written (never
        held whole): a network answering far more than any client should read. With ``ms``,
        one ``body`` at a time, ``ms`` apart: an answer that trickles in."""
        entry.status = fault.status or 200
        start_headers = [(b"content-type", b"application/json")]
        await send(
            {"type": "http.response.start", "status": entry.status, "headers": start_headers}
        )
        unit = fault.body.encode()
        per_chunk = 1 if fault.ms else max(1, 65_536 // max(1, len(unit)))  # about 64 KiB
        left = fault.repeat
        try:
            while left > 0:
                count = min(left, per_chunk)
                await send({"type": "http.response.body", "body": unit * count, "more_body": True})
                left -= count
                if fault.ms and left:
                    await asyncio.sleep(fault.ms / 1000)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client stopped reading and went away: what it should do
            return

    async def _drop(self, scope: Scope, send: Send) -> None:
        if self.drop_hook is not None and self.drop_hook(scope):
            for _ in range(3):  # let the loop run connection_lost before we return
                await asyncio.sleep(0)
            return
        # No server hook (e.g. an in-process test client): break the response mid-way.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
        )
        raise ConnectionAbortedError("sandbox fault: connection dropped")

    async def _send(
        self, response: Response, entry: JournalEntry, scope: Scope, send: Send
    ) -> None:
        entry.status = response.status_code
        await response(scope, _no_receive, send)

    async def _send_captured(
        self, captured: _Captured, headers: dict[str, str], entry: JournalEntry, send: Send
    ) -> None:
        start = captured.start or {"type": "http.response.start", "status": 500, "headers": []}
        raw = list(start.get("headers", []))
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        entry.status = int(start["status"])
        await send({"type": "http.response.start", "status": entry.status, "headers": raw})
        await send({"type": "http.response.body", "body": bytes(captured.body)})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _echo(fault: FaultSpec, request: Request) -> str:
    """The fault's message followed by the request quoted back: what a careless network's
    error body does, and what Herald must never store or log as it came."""
    query = request.url.query
    body = (await request.body()).decode("utf-8", "replace")[:1000]
    return (
        f"{fault.message or 'Request refused'}: {request.method} {request.url.path}"
        f"{'?' + query if query else ''} Authorization: {request.headers.get('authorization')}"
        f" body: {body}"
    )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(networks: dict[str, SandboxNetwork] | None = None) -> SandboxApp:
    """A fresh sandbox app with its own state (``app.sandbox``)."""
    return SandboxApp(Sandbox(networks if networks is not None else load_networks()))


__all__ = ["NETWORKS", "ASGIApp", "SandboxApp", "create_app", "load_networks"]
