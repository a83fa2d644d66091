"""The one error format of the API, and the handlers that map every failure into it.

Every error answers ``{"error": {"code", "message", "details", "correlation_id"}}`` with the
right status: validation, authentication, workspace denial, not found, conflicts, scheduling
refusals and unexpected failures alike. Inputs are never echoed and stack traces never leave
the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from herald.connections.access import Refused
from herald.publishing.scheduling import SchedulingError
from herald.security.auth import AuthError, WorkspaceDenied, WorkspaceRequired
from herald.telemetry import context
from herald.telemetry.context import HTTP_CORRELATION_HEADER

log = structlog.get_logger("herald.api")

#: ``Retry-After`` of a 503 for a database that could not serve the request.
DATABASE_RETRY_AFTER_S = 2


class ApiError(Refused):
    """An error the API answers deliberately: status, stable code, human message (and, unlike
    the refusals of the layers below, response headers)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, details=details)
        self.headers = dict(headers or {})


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    correlation_id: str | None


class ErrorEnvelope(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def error_body(
    code: str, message: str, details: Mapping[str, Any], correlation_id: str | None
) -> dict[str, Any]:
    """The one error shape, as JSON-ready data."""
    return {
        "error": {
            "code": code,
            "message": message,
            "details": jsonable_encoder(dict(details)),
            "correlation_id": correlation_id,
        }
    }


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, details or {}, context.correlation_id())
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _field(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


# pydantic error types whose message quotes part of the input (a UUID's parse error names the
# character it found): answered with a fixed message instead.
_QUOTING_MESSAGES = {"uuid_parsing": "Input should be a valid UUID"}


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Per-field messages from pydantic errors, without the offending input."""
    return [
        {
            "field": _field(err.get("loc", ())),
            "message": _QUOTING_MESSAGES.get(err["type"], str(err.get("msg", ""))),
            "type": err["type"],
        }
        for err in errors
    ]


_HTTP_CODES = {
    # FastAPI answers 400 only when the body cannot be parsed at all (a JSON syntax error is
    # a validation error with a position, handled below).
    400: ("malformed_json", "the request body could not be parsed as JSON"),
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    408: ("request_timeout", "the request did not arrive in time"),
    413: ("payload_too_large", "the request body is too large"),
    415: ("unsupported_media_type", "send the body as application/json"),
}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path, plus OPTIONS: each method is
    tried against the app's routes as the router itself would match it."""
    routes = request.app.router.routes
    allowed = {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    }
    return sorted(allowed | {"OPTIONS"})


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
    )


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return error_response(exc.status, exc.code, exc.message, details=exc.details)


async def _scheduling_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchedulingError)
    return error_response(exc.status, exc.code, exc.message, details=exc.details)


async def _auth_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    if exc.reason == "missing":
        challenge = "Bearer"
    elif exc.status == 403:
        challenge = 'Bearer error="insufficient_scope"'  # RFC 6750: a genuine token, not enough
    else:
        challenge = 'Bearer error="invalid_token"'
    return error_response(
        exc.status, exc.code, exc.message, headers={"WWW-Authenticate": challenge}
    )


async def _workspace_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkspaceDenied | WorkspaceRequired)
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    malformed = [err for err in errors if err.get("type") == "json_invalid"]
    if malformed:
        position = malformed[0].get("loc", ("body", None))[-1]
        return error_response(
            400,
            "malformed_json",
            "the request body is not valid JSON",
            details={"position": position},
        )
    return error_response(
        422,
        "validation_failed",
        "the request is not valid",
        details={"fields": validation_details(errors)},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the methods of the first route that matched the path.
        headers["Allow"] = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers)
    code, message = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        message = "the request body is nested too deeply to parse"
    return error_response(exc.status_code, code, message, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is down, restarting, unreachable, out of pooled connections, or cancelled a
    statement (the statement timeout, a deadlock, a serialization failure). The request's
    transaction rolled back, unless the connection was lost during the commit itself; either
    way sending it again is safe (a create carries its idempotency key, an edit its
    ``If-Match`` version)."""
    reason = getattr(exc, "orig", None) or exc
    log.warning(
        "http.database_unavailable",
        method=request.method,
        path=request.url.path,
        error=type(reason).__name__,
        detail=str(reason).partition("\n")[0][:300],
    )
    return error_response(
        503,
        "database_unavailable",
        "the database could not serve this request; send it again shortly",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def _driver_error(exc: Exception) -> Exception:
    """The database driver's own error under SQLAlchemy's wrapper (its SQLSTATE, its diag)."""
    return getattr(exc, "orig", None) or exc


def _log_database_refusal(request: Request, exc: Exception, event: str, *, error: bool) -> None:
    """Log a database error with what a log line may carry — the driver's error class, the
    SQLSTATE, the server's primary message. Not ``str(exc)``: SQLAlchemy's text holds the
    statement's parameters, which may hold a secret."""
    orig = _driver_error(exc)
    primary = getattr(getattr(orig, "diag", None), "message_primary", None) or ""
    (log.error if error else log.warning)(
        event,
        method=request.method,
        path=request.url.path,
        error=type(orig).__name__,
        sqlstate=getattr(orig, "sqlstate", None),
        detail=primary[:200],
    )


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """A value every check let through and the database refused (a NUL character in text, a
    number or date outside its column's range): the request's fault, answered as such. Fields
    are checked where they are declared; this answers the ones no check names yet."""
    _log_database_refusal(request, exc, "http.value_refused_by_database", error=False)
    return error_response(
        422,
        "value_not_storable",
        "a value in the request cannot be stored: text must not contain NUL (U+0000), and "
        "numbers and dates must be within range",
    )


# Unique and foreign-key violations: a concurrent request got there first (the same account
# connected twice at once, a name taken, a row it refers to deleted meanwhile).
_CONFLICT_STATES = {"23505", "23503"}


async def _integrity_conflict(request: Request, exc: Exception) -> JSONResponse:
    conflict = getattr(_driver_error(exc), "sqlstate", None) in _CONFLICT_STATES
    _log_database_refusal(request, exc, "http.integrity_error", error=not conflict)
    if not conflict:
        return error_response(500, "internal_error", "an unexpected error occurred")
    return error_response(
        409,
        "concurrent_change",
        "a concurrent request changed the same thing first; read it again, then send this "
        "again if it is still needed",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type the API knows into the one format (the middleware answers
    anything else with a 500 in the same format)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(SchedulingError, _scheduling_error)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(WorkspaceDenied, _workspace_error)
    app.add_exception_handler(WorkspaceRequired, _workspace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(DataError, _unstorable_value)
    app.add_exception_handler(IntegrityError, _integrity_conflict)


# The error responses every authenticated endpoint may give, for the OpenAPI document.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Malformed request or workspace not named"},
    401: {"model": ErrorEnvelope, "description": "Missing, invalid or expired token"},
    403: {"model": ErrorEnvelope, "description": "The token's role is not accepted"},
    404: {"model": ErrorEnvelope, "description": "Not found in this workspace"},
    422: {"model": ErrorEnvelope, "description": "Validation failed"},
}


_ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
_CORRELATION_HEADER = {
    "description": "The request's correlation id (the one sent, when well formed, or a new one)",
    "required": True,
    # The shape herald.telemetry.context.clean_id accepts; a fresh id is a UUID, which fits.
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}
# Answered by the middleware before any route runs, so no route declares them itself.
_EDGE_RESPONSES: dict[str, tuple[str, frozenset[str]]] = {
    "408": ("The request did not arrive within the request timeout", frozenset({"*"})),
    "413": ("The request body is over the size limit", frozenset({"post", "put", "patch"})),
    "415": ("The request body is not JSON", frozenset({"post", "put", "patch"})),
    "431": ("The request headers are over the size limit", frozenset({"*"})),
    "503": (
        "The database could not serve the request; send it again after Retry-After",
        frozenset({"*"}),
    ),
}


def document_edge_responses(app: FastAPI) -> None:
    """Complete the app's OpenAPI document with what the middleware answers for every route
    (body and header limits) and the ``X-Correlation-ID`` header every response carries."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status, (description, methods) in _EDGE_RESPONSES.items():
                    if "*" in methods or method in methods:
                        responses.setdefault(
                            status,
                            {
                                "description": description,
                                "content": {"application/json": {"schema": _ENVELOPE_REF}},
                            },
                        )
                for response in responses.values():
                    response.setdefault("headers", {})[HTTP_CORRELATION_HEADER] = (
                        _CORRELATION_HEADER
                    )
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
