"""The HTTP API: everything under ``/api/postiz/`` (the Postiz integration's contract).

:func:`create_app` builds the FastAPI application for one settings object; ``herald api``
serves it with uvicorn. The OpenAPI document is ``/api/postiz/openapi.json`` and the
interactive docs ``/api/postiz/docs``.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI

from herald.api import alerts, audit, connections, monitoring, posts, webhooks, workspaces
from herald.api.errors import (
    document_edge_responses,
    install_error_handlers,
)
from herald.api.middleware import RequestMiddleware
from herald.api.paths import PREFIX
from herald.security.auth import check_configured
from herald.settings import Settings
from herald.telemetry.logging import configure_logging

MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # the request's headers together (uvicorn's parser shares it)


def create_app(settings: Settings, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The API application. Refuses to build when no JWT key is configured.

    Served by something other than ``herald api`` (gunicorn, a bare uvicorn), logging was
    never configured: structlog's own defaults would render an error's traceback with its local
    variables (request headers, bearer tokens) and redact nothing, so it is configured here.
    """
    check_configured(settings)
    if not structlog.is_configured():
        configure_logging(settings)
    app = FastAPI(
        title="Herald API",
        summary="Schedule and follow social-media posts of one workspace.",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        # The request middleware makes the server span (with the correlation id); FastAPI's
        # native tracing would make a second one.
        telemetry={"tracing": False},
    )
    app.state.settings = settings
    app.include_router(posts.router)
    app.include_router(workspaces.router)
    app.include_router(connections.router)
    app.include_router(webhooks.router)
    app.include_router(monitoring.probes)
    app.include_router(monitoring.router)
    app.state.metrics_registry = monitoring.metrics_registry(settings)
    app.include_router(alerts.router)
    app.include_router(alerts.cron_router)
    app.include_router(audit.router)
    install_error_handlers(app)
    document_edge_responses(app)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=max_body_bytes,
        max_header_bytes=MAX_HEADER_BYTES,
        body_timeout_s=settings.api_request_timeout_s,
    )
    return app
