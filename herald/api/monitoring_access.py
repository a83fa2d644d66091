"""Who may read monitoring, and which workspaces they see.

Workspace owners and admins see their workspace (chosen by ``X-Workspace-ID`` as for posts);
members do not see monitoring (403). The ``service_role`` sees every workspace, or one with
``?workspace_id=`` (or the header); each of its uses is audited. A ``workspace_id`` query that
disagrees with the header is a 400.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald import db
from herald.alerts.service import Scope
from herald.api.deps import audit_now, identify, member_workspace
from herald.api.errors import ApiError
from herald.models import Role, Workspace
from herald.security.audit import Actor, EventType, Outcome, Severity
from herald.security.auth import Identity, workspace_uuid

_bearer = HTTPBearer(auto_error=False, description="A JWT signed by the host application")
ADMIN_ROLES = (Role.OWNER, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class MonitoringCaller:
    actor: Actor
    scope: Scope
    is_service: bool


def _uuid(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    parsed = workspace_uuid(value)
    if parsed is None:
        raise ApiError(404, "workspace_not_found", "no such workspace")
    return parsed


def _identified(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> tuple[Identity, Actor]:
    # A dependency of its own, so the token is checked before any parameter is validated:
    # a caller without a valid token learns nothing, not even which parameter was wrong.
    return identify(request)


def monitoring_caller(
    request: Request,
    identified: Annotated[tuple[Identity, Actor], Depends(_identified)],
    x_workspace_id: Annotated[str | None, Header(alias="X-Workspace-ID")] = None,
    workspace_id: Annotated[
        uuid.UUID | None,
        Query(description="service_role: one workspace (default all); others: their own"),
    ] = None,
) -> MonitoringCaller:
    identity, actor = identified
    header = _uuid(x_workspace_id)
    if header is not None and workspace_id is not None and header != workspace_id:
        raise ApiError(
            400, "workspace_mismatch", "the workspace_id query disagrees with X-Workspace-ID"
        )
    if identity.is_service:
        chosen = workspace_id or header
        if chosen is not None:
            with db.session_scope() as session:
                db.service_scope(session, "api.monitoring_workspace")
                if session.get(Workspace, chosen) is None:
                    raise ApiError(404, "workspace_not_found", "no such workspace")
        audit_now(
            EventType.SERVICE_ROLE_USE,
            actor=actor,
            severity=Severity.MEDIUM,
            workspace_id=chosen,
            message="service role used monitoring",
            details={"method": request.method, "path": request.url.path},
        )
        return MonitoringCaller(actor, Scope(chosen), is_service=True)
    # A member names its workspace by the header or the query (they agree, checked above); a
    # workspace that is not theirs is a cross-tenant attempt, audited and answered 404.
    requested = x_workspace_id if x_workspace_id is not None else workspace_id
    principal = member_workspace(
        request, identity, actor, None if requested is None else str(requested)
    )
    if principal.membership_role not in ADMIN_ROLES:
        audit_now(
            EventType.ACCESS_DENIED,
            actor=actor,
            outcome=Outcome.DENIED,
            severity=Severity.LOW,
            workspace_id=principal.workspace_id,
            message="monitoring needs an owner or admin",
            details={"method": request.method, "path": request.url.path},
        )
        raise ApiError(403, "forbidden", "monitoring is for the workspace's owners and admins")
    return MonitoringCaller(actor, Scope(principal.workspace_id), is_service=False)


Monitoring = Annotated[MonitoringCaller, Depends(monitoring_caller)]
