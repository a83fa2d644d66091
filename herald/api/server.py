"""Serving the API: uvicorn with Herald's limits, and uvicorn's own refusals in the API's
error format.

uvicorn (with h11) answers a request it cannot parse — a request head over the size limit, a
malformed request line — before the application sees it, in plain text. (h11 enforces its
size limit only on a head still arriving in pieces; the API's middleware refuses one that
arrived whole with the same answer.) The protocol class
here gives those answers the documented JSON error shape: ``431 headers_too_large`` or
``400 bad_request``, with a fresh correlation id in the body and ``X-Correlation-ID``, and
logs them like any other request.

uvicorn also waits for a request head without end: a connection that sends nothing, or a head
a byte at a time, was held open for good (slowloris; a few thousand of them take every file
descriptor). The protocol gives each head ``HERALD_API_REQUEST_TIMEOUT_S`` from the moment it
is awaited (a connection opened, or the first byte of the next request on a kept-alive one),
then answers ``408 request_timeout`` and closes. The body has the same time again, counted by
the API's middleware.

A connection closed while the client may still be sending (the rest of a body answered early,
an oversized or trickled head) is closed gently: the server half-closes, discards what still
arrives, and closes ``LINGER_S`` later or when the client closes first. Closed at once, the
kernel answers the client's next byte with a reset, and the reset destroys the answer the
client had not read yet.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import h11
import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from herald.api.app import MAX_HEADER_BYTES
from herald.api.errors import error_body
from herald.settings import Settings
from herald.telemetry import context
from herald.telemetry.context import HTTP_CORRELATION_HEADER

log = structlog.get_logger("herald.api")

LINGER_S = 2.0  # how long a refused connection is drained before it is closed


class _RememberingConnection(h11.Connection):
    """An h11 connection that keeps the reason it last refused the client."""

    refusal: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refusal = exc
            raise


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: ``close()`` lingers while the client may
    still be sending (see the module docstring); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: JsonErrorsH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not (self._protocol.client_may_be_sending() and self._transport.can_write_eof()):
            self._transport.close()
            return
        self._lingering = True
        self._protocol.drain()
        self._transport.write_eof()
        self._protocol.loop.call_later(LINGER_S, self._transport.close)


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering its own refusals in the API's error format, and a
    request head that does not come in time (see the module docstring)."""

    head_timeout_s: float = 15.0  # server_config sets the configured one

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or MAX_HEADER_BYTES
        self.conn = _RememberingConnection(h11.SERVER, self.max_header_bytes)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # lingering: discard what the client still sends
            return
        if self._waiting_for_head():
            self._await_head()
        super().data_received(data)
        if not self._waiting_for_head():
            self._stop_head_timer()

    def client_may_be_sending(self) -> bool:
        """Whether the client may still send on this connection: a body not all read, a head
        refused or still arriving."""
        their_state = self.conn.their_state
        return their_state in (h11.SEND_BODY, h11.ERROR) or bool(self.conn.trailing_data[0])

    def drain(self) -> None:
        """Read again if flow control paused reading (the client's bytes would otherwise wait
        in the socket and the close would still reset); ``data_received`` discards them."""
        self._stop_head_timer()
        self.flow.resume_reading()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if self.conn.their_state not in (h11.IDLE, h11.DONE):
            # The rest of the body of a request already answered, still trickling: nothing is
            # left to answer, only a connection to free.
            self.transport.close()
            return
        self._refuse(408, "request_timeout", "the request did not arrive in time", {})

    def send_400_response(self, msg: str) -> None:
        refusal = self.conn.refusal if isinstance(self.conn, _RememberingConnection) else None
        if refusal is not None and refusal.error_status_hint == 431:
            details = {"max_bytes": self.max_header_bytes}
            self._refuse(431, "headers_too_large", "the request headers are too large", details)
        else:
            self._refuse(400, "bad_request", "the request is not valid HTTP", {})

    def _refuse(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        """Answer ``status`` in the API's error format and close: written as bytes, since the
        request it answers never became one h11 could answer."""
        self._stop_head_timer()
        correlation_id = context.new_correlation_id()
        body = json.dumps(
            error_body(code, message, details, correlation_id), separators=(",", ":")
        ).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            f"{HTTP_CORRELATION_HEADER.lower()}: {correlation_id}",
            "connection: close",
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.transport.close()
        log.info("http.refused", status=status, code=code, correlation_id=correlation_id)


def server_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """How ``herald api`` runs uvicorn: Herald's protocol class, header limit and request
    timeout; requests are logged by the API's middleware (with correlation ids), so no access
    log."""
    protocol = type(
        "HeraldH11Protocol",
        (JsonErrorsH11Protocol,),
        {"head_timeout_s": settings.api_request_timeout_s},
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_config=None,
        access_log=False,
    )
