"""The edge of every request: correlation, a server span, one log line, header and body
limits, and the last-resort 500.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) so the correlation contextvars it sets are
the ones the endpoint, its thread and the audit log see.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.api.errors import error_response
from herald.telemetry import context
from herald.telemetry.context import HTTP_CORRELATION_HEADER

log = structlog.get_logger("herald.api")
tracer = trace.get_tracer("herald.api")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestTimedOut(HTTPException):
    """Raised from ``receive`` when the body has not all come within the request timeout."""

    def __init__(self) -> None:
        # The rest of the body may still come: the connection cannot carry another request.
        super().__init__(status_code=408, headers={"Connection": "close"})


class PayloadTooLarge(HTTPException):
    """Raised from ``receive`` when a body grows past the cap (FastAPI re-raises an
    ``HTTPException`` met while reading the body, so the error handlers format it)."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        with context.correlated(headers.get(HTTP_CORRELATION_HEADER)) as correlation_id:
            await self._handle(scope, receive, send, headers, correlation_id)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, correlation_id: str
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_correlation(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)[HTTP_CORRELATION_HEADER] = correlation_id
            await send(message)

        carrier = dict(headers.items())
        with tracer.start_as_current_span(
            f"{method} {path}",
            kind=SpanKind.SERVER,
            context=propagate.extract(carrier),
            attributes={
                "http.request.method": method,
                "url.path": path,
                "herald.correlation_id": correlation_id,
            },
        ) as span:
            try:
                rejection = self._reject_head(scope) or self._reject(method, headers)
                if rejection is not None:
                    await rejection(scope, receive, send_with_correlation)
                else:
                    await self.app(scope, self._limited(receive), send_with_correlation)
            except Exception as exc:  # the last resort: one format, no stack trace out
                log.exception("http.unhandled_error", method=method, path=path)
                span.record_exception(exc)
                if not response_started:
                    response = error_response(500, "internal_error", "an unexpected error occurred")
                    await response(scope, receive, send_with_correlation)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                log.info(
                    "http.request",
                    method=method,
                    path=path,
                    route=template,
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    def _reject_head(self, scope: Scope) -> Any:
        """An early answer for headers over the limit, else None. uvicorn's parser refuses
        a head over the limit only while it arrives in pieces; one that came whole is
        refused here, with the same answer."""
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size <= self.max_header_bytes:
            return None
        return error_response(
            431,
            "headers_too_large",
            "the request headers are too large",
            details={"max_bytes": self.max_header_bytes},
        )

    def _reject(self, method: str, headers: Headers) -> Any:
        """An early answer for a body that is too large or not JSON, else None."""
        if method not in _BODY_METHODS:
            return None
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        has_body = chunked or (length is not None and length.strip() not in ("", "0"))
        if not has_body:
            return None
        if length is not None:
            try:
                too_large = int(length) > self.max_body_bytes
            except ValueError:
                return error_response(400, "bad_request", "Content-Length is not a number")
            if too_large:
                return self._too_large()
        if not _is_json(headers.get("content-type", "")):
            return error_response(
                415, "unsupported_media_type", "send the body as application/json"
            )
        return None

    def _too_large(self) -> Any:
        return error_response(
            413,
            "payload_too_large",
            "the request body is too large",
            details={"max_bytes": self.max_body_bytes},
        )

    def _limited(self, receive: Receive) -> Receive:
        """``receive``, refusing a body (e.g. chunked) that grows past the cap or has not all
        come within the body timeout (a body trickled in would hold the request for good)."""
        received = 0
        cap = self.max_body_bytes
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        complete = False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # waiting for a disconnect now, as long as the response takes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimedOut from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise PayloadTooLarge
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return limited
