"""Serving the API: uvicorn with Herald's limits, and uvicorn's own refusals in the API's
error format.

uvicorn (with h11) answers a request it cannot parse — a request head over the size limit, a
malformed request line — before the application sees it, in plain text. (h11 enforces its
size limit only on a head still arriving in pieces; the API's middleware refuses one that
arrived whole with the same answer.) The protocol class
here gives those answers the documented JSON error shape: ``431 headers_too_large`` or
``400 bad_request``, with a fresh correlation id in the body and ``X-Correlation-ID``, and
logs them like any other request.
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


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering its own refusals in the API's error format."""

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
        self._draining = False

    def send_400_response(self, msg: str) -> None:
        refusal = self.conn.refusal if isinstance(self.conn, _RememberingConnection) else None
        too_large = refusal is not None and refusal.error_status_hint == 431
        if too_large:
            status, code, message = 431, "headers_too_large", "the request headers are too large"
            details: dict[str, Any] = {"max_bytes": self.max_header_bytes}
        else:
            status, code, message = 400, "bad_request", "the request is not valid HTTP"
            details = {}
        correlation_id = context.new_correlation_id()
        body = json.dumps(
            error_body(code, message, details, correlation_id), separators=(",", ":")
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (HTTP_CORRELATION_HEADER.lower().encode(), correlation_id.encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self._linger()
        log.info("http.refused", status=status, code=code, correlation_id=correlation_id)

    def _linger(self) -> None:
        # Closing while the client is still sending (the rest of an oversized head) makes the
        # kernel answer with a reset that can destroy the response before the client reads
        # it. Send FIN instead, discard whatever still arrives, and close a little later.
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._draining:
            super().data_received(data)


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How ``herald api`` runs uvicorn: Herald's protocol class and header limit; requests
    are logged by the API's middleware (with correlation ids), so no access log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=JsonErrorsH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_config=None,
        access_log=False,
    )
