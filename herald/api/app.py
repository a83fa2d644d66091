"""The HTTP API: everything under ``/api/postiz/`` (the Postiz integration's contract).

:func:`create_app` builds the FastAPI application for one settings object; ``herald api``
serves it with uvicorn. The OpenAPI document is ``/api/postiz/openapi.json`` and the
interactive docs ``/api/postiz/docs``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from herald import db
from herald.api import alerts, posts
from herald.api.errors import ApiError, ErrorEnvelope, install_error_handlers
from herald.api.middleware import RequestMiddleware
from herald.api.paths import PREFIX
from herald.security.auth import check_configured
from herald.settings import Settings

MAX_BODY_BYTES = 1024 * 1024


class Health(BaseModel):
    status: str
    database: str


health_router = APIRouter(prefix=PREFIX, tags=["health"])


@health_router.get(
    "/health",
    responses={503: {"model": ErrorEnvelope, "description": "The database is unreachable"}},
)
def health() -> Health:
    """Liveness: the process answers and the database runs ``SELECT 1``. No authentication."""
    try:
        with db.session_scope() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        raise ApiError(503, "database_unavailable", "the database is not reachable") from None
    return Health(status="ok", database="ok")


def create_app(settings: Settings, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The API application. Refuses to build when no JWT key is configured."""
    check_configured(settings)
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
    app.include_router(health_router)
    app.include_router(posts.router)
    app.include_router(alerts.router)
    app.include_router(alerts.cron_router)
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, max_body_bytes=max_body_bytes)
    return app
