"""Monitoring over HTTP: the probes, Prometheus' ``/metrics``, and ``/api/postiz/monitoring``.

Without the JWT (for orchestrators and Prometheus):

- ``GET /healthz``: liveness; answers without touching anything;
- ``GET /readyz``: readiness; the database and the broker answer (200) or not (503);
- ``GET /metrics``: the database's and broker's state as Prometheus gauges, read at scrape
  time (``telemetry/scrape.py``); ``Authorization: Bearer <HERALD_METRICS_TOKEN>`` when set.

With the JWT, as for posts (:mod:`herald.api.monitoring_access`): owners and admins of a
workspace see it (``X-Workspace-ID``); the ``service_role`` sees every workspace or filters with
``?workspace_id=`` (its reads are audited); a ``workspace_id`` query that disagrees with the
header is a 400.

- ``GET /api/postiz/monitoring/health``: the health report, 200 or 503 when unhealthy;
- ``GET /api/postiz/monitoring/metrics?workspace_id&from&to``: every figure of the catalogue
  (``telemetry/figures.py``, the one alert rules read) over a window, split by its usual
  labels; a workspace's caller gets the figures computed per workspace.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.security import HTTPBearer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field

from herald import db
from herald.api.deps import settings_of
from herald.api.errors import COMMON_RESPONSES, ApiError, ErrorEnvelope
from herald.api.monitoring_access import Monitoring
from herald.api.paths import PREFIX
from herald.beat_schedule import beat_schedule
from herald.celery_app import QUEUES, broker_connection
from herald.contracts import Instant
from herald.models import Role, utcnow
from herald.settings import Settings
from herald.telemetry import metrics as instruments
from herald.telemetry.figures import CATALOGUE, Window, compute
from herald.telemetry.health import HealthReport, Reachability, check_health, dependencies
from herald.telemetry.prometheus import authorized
from herald.telemetry.scrape import StateCollector
from herald.telemetry.state import job_intervals, take_reading

MAX_WINDOW = timedelta(days=31)
DEFAULT_WINDOW = timedelta(hours=1)
MANAGERS = frozenset({Role.OWNER, Role.ADMIN})

probes = APIRouter(tags=["probes"])
router = APIRouter(prefix=f"{PREFIX}/monitoring", tags=["monitoring"], responses=COMMON_RESPONSES)
_bearer_scheme = HTTPBearer(auto_error=False, description="A JWT signed by the host application")


# -- probes and /metrics -------------------------------------------------------------------


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str = Field(description="ready, or not_ready")
    database: Reachability
    broker: Reachability


@probes.get("/healthz")
def healthz() -> Liveness:
    """Liveness: the process answers. Touches nothing; no authentication."""
    return Liveness()


@probes.get("/readyz", responses={503: {"model": Readiness, "description": "A dependency is down"}})
def readyz(request: Request, response: Response) -> Readiness:
    """Readiness: the database and the broker answer. No authentication."""
    settings = settings_of(request)
    database, broker = dependencies(take_reading(settings, lambda: broker_connection(settings), ()))
    ready = database.reachable and broker.reachable
    response.status_code = 200 if ready else 503
    return Readiness(status="ready" if ready else "not_ready", database=database, broker=broker)


def metrics_registry(settings: Settings) -> CollectorRegistry:
    """What ``/metrics`` renders: the state collector, plus this process's own instruments."""
    jobs = job_intervals(beat_schedule(settings, QUEUES))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        StateCollector(
            lambda: take_reading(settings, lambda: broker_connection(settings), QUEUES),
            queues=QUEUES,
            jobs=list(jobs),
        )
    )
    registry.register(_Instruments())
    return registry


class _Instruments:
    """This process's Herald instruments (tasks it sent, provider calls it made…)."""

    def collect(self) -> Any:
        return instruments.REGISTRY.collect()


@probes.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"},
        401: {"model": ErrorEnvelope, "description": "HERALD_METRICS_TOKEN is set and not given"},
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition of what the database and the broker know, read now."""
    settings = settings_of(request)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if not authorized(request.headers.get("authorization"), token):
        raise ApiError(
            401,
            "invalid_metrics_token",
            "a valid metrics bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(request.app.state.metrics_registry)
    return Response(body, media_type=content_type)


# -- /api/postiz/monitoring ----------------------------------------------------------------


@router.get(
    "/health",
    responses={503: {"model": HealthReport, "description": "Unhealthy: see reasons"}},
)
def health(caller: Monitoring, request: Request, response: Response) -> HealthReport:
    """Database and broker reachability, queues and their consumers, posts, the last hour's
    publishing, periodic jobs and open alerts, judged healthy, degraded or unhealthy."""
    settings = settings_of(request)
    report = check_health(
        settings,
        lambda: broker_connection(settings),
        QUEUES,
        job_intervals(beat_schedule(settings, QUEUES)),
        workspace_id=caller.scope.workspace_id,
    )
    response.status_code = 503 if report.status == "unhealthy" else 200
    return report


class FigureOut(BaseModel):
    name: str
    unit: str
    labels: dict[str, str]
    value: float | None = Field(description="null: no sample in the window")
    count: int = Field(description="Observations behind the value (a rule's minimum samples)")


class FiguresOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    workspace_id: uuid.UUID | None
    from_: datetime = Field(alias="from")
    to: datetime
    figures: list[FigureOut]


@router.get("/metrics")
def figures(
    caller: Monitoring,
    request: Request,
    from_: Annotated[Instant | None, Query(alias="from", description="Inclusive")] = None,
    to: Annotated[Instant | None, Query(description="Exclusive; default now")] = None,
) -> FiguresOut:
    """Figures computed in SQL over ``[from, to)`` (default: the last hour)."""
    end = to or utcnow()
    if from_ is None and end < datetime.min.replace(tzinfo=UTC) + DEFAULT_WINDOW:
        raise ApiError(400, "invalid_window", "to is too early for the default window: give from")
    start = from_ or end - DEFAULT_WINDOW
    if start >= end:
        raise ApiError(400, "invalid_window", "from must be before to")
    if end - start > MAX_WINDOW:
        raise ApiError(400, "invalid_window", f"the window may span at most {MAX_WINDOW.days} days")
    workspace_id = caller.scope.workspace_id
    window = Window(start, end)
    found = []
    with db.session_scope() as session, db.session_scope() as service:
        db.service_scope(service, "monitoring")
        if workspace_id is not None:
            db.tenant_scope(session, workspace_id)
        for fig in CATALOGUE.values():
            if workspace_id is not None and not fig.per_workspace:
                continue  # system-wide (workers, jobs, the audit chain): health shows them
            # A workspace's figures are read under its row-level security, but for those that
            # count rows of no workspace too (system-wide alerts), which it hides.
            reader = service if workspace_id is None or fig.system_rows else session
            for sample in compute(
                reader, fig.name, window, workspace_id=workspace_id, group_by=fig.split
            ):
                found.append(
                    FigureOut(
                        name=fig.name,
                        unit=fig.unit,
                        labels=dict(sample.labels),
                        value=sample.value,
                        count=sample.count,
                    )
                )
    return FiguresOut.model_validate(
        {"workspace_id": workspace_id, "from": start, "to": end, "figures": found}
    )
