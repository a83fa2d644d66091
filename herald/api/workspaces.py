"""``/api/postiz/workspaces`` and ``…/{id}/members``: manage workspaces and who belongs.

Any signed-in user may create a workspace (and owns it); owners and admins manage it; only an
owner deletes it or grants, revokes or removes an owner; the service role may do everything,
and each use is audited. The rules live in :mod:`herald.connections.workspaces`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from herald import db
from herald.api.deps import audit_now, bearer_scheme, identify
from herald.api.errors import COMMON_RESPONSES, ErrorEnvelope
from herald.api.paths import PREFIX
from herald.connections import workspaces as service
from herald.connections.access import Manager
from herald.contracts import TrimmedText
from herald.models import Membership, Role
from herald.security.audit import EventType, Severity

router = APIRouter(prefix=f"{PREFIX}/workspaces", tags=["workspaces"], responses=COMMON_RESPONSES)

MANAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorEnvelope, "description": "Your role in the workspace cannot do this"},
    409: {"model": ErrorEnvelope, "description": "Conflicts with the workspace's state"},
}

Name = Annotated[TrimmedText, Field(max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@|-]+$")
]
UserPath = Annotated[
    str,
    Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@|-]+$", description="User id"),
]


class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    slug: Slug | None = None
    owner_user_id: UserId | None = Field(
        default=None, description="Service role only: the first owner (a user is its own)"
    )


class WorkspacePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    role: Role | None = Field(description="Your role; null for the service role")
    members: int
    created_at: datetime

    @classmethod
    def of(cls, view: service.WorkspaceView) -> WorkspaceOut:
        ws = view.workspace
        return cls(
            id=ws.id,
            name=ws.name,
            slug=ws.slug,
            role=view.role,
            members=view.members,
            created_at=ws.created_at,
        )


class WorkspaceList(BaseModel):
    items: list[WorkspaceOut]


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: UserId
    role: Role = Role.MEMBER


class MemberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class MemberOut(BaseModel):
    user_id: str
    role: Role
    added_at: datetime

    @classmethod
    def of(cls, membership: Membership) -> MemberOut:
        return cls(user_id=membership.user_id, role=membership.role, added_at=membership.created_at)


class MemberList(BaseModel):
    items: list[MemberOut]


def manager_of(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Manager:
    """The verified caller as a workspace manager (a service-role use is audited)."""
    identity, actor = identify(request)
    if identity.is_service:
        audit_now(
            EventType.SERVICE_ROLE_USE,
            actor=actor,
            severity=Severity.MEDIUM,
            message="service role used on the API",
            details={"method": request.method, "path": request.url.path},
        )
    return Manager(actor, identity.subject)


CurrentManager = Annotated[Manager, Depends(manager_of)]


@contextmanager
def management_session(workspace_id: uuid.UUID | None = None) -> Iterator[Session]:
    """A transaction limited to ``workspace_id`` (every rule, membership first, checked in
    :mod:`herald.connections`); without one, the service scope, for the one operation that is
    cross-workspace by nature: listing the workspaces a caller belongs to."""
    with db.session_scope() as session:
        if workspace_id is None:
            db.service_scope(session, "api.list_workspaces")
        else:
            db.tenant_scope(session, workspace_id)
        yield session


@router.post("", status_code=201, responses=MANAGE_RESPONSES)
def create_workspace(body: WorkspaceIn, manager: CurrentManager) -> WorkspaceOut:
    """Create a workspace; the caller becomes its owner."""
    workspace_id = uuid.uuid4()
    with management_session(workspace_id) as session:  # the insert runs in its own scope
        view = service.create_workspace(
            session,
            manager,
            body.name,
            slug=body.slug,
            owner_user_id=body.owner_user_id,
            workspace_id=workspace_id,
        )
        return WorkspaceOut.of(view)


@router.get("")
def list_workspaces(manager: CurrentManager) -> WorkspaceList:
    """The caller's workspaces with its role in each (every workspace for the service role)."""
    with management_session() as session:
        return WorkspaceList(
            items=[WorkspaceOut.of(v) for v in service.list_workspaces(session, manager)]
        )


@router.get("/{workspace_id}")
def get_workspace(workspace_id: uuid.UUID, manager: CurrentManager) -> WorkspaceOut:
    with management_session(workspace_id) as session:
        return WorkspaceOut.of(service.get_workspace(session, manager, workspace_id))


@router.patch("/{workspace_id}", responses=MANAGE_RESPONSES)
def rename_workspace(
    workspace_id: uuid.UUID, body: WorkspacePatch, manager: CurrentManager
) -> WorkspaceOut:
    """Rename (owners and admins)."""
    with management_session(workspace_id) as session:
        return WorkspaceOut.of(service.rename_workspace(session, manager, workspace_id, body.name))


@router.delete("/{workspace_id}", status_code=204, responses=MANAGE_RESPONSES)
def delete_workspace(workspace_id: uuid.UUID, manager: CurrentManager) -> Response:
    """Delete (soft, owners only): hidden from everyone; none of its posts publishes."""
    with management_session(workspace_id) as session:
        service.delete_workspace(session, manager, workspace_id)
    return Response(status_code=204)


@router.get("/{workspace_id}/members")
def list_members(workspace_id: uuid.UUID, manager: CurrentManager) -> MemberList:
    with management_session(workspace_id) as session:
        members = service.list_members(session, manager, workspace_id)
        return MemberList(items=[MemberOut.of(m) for m in members])


@router.post("/{workspace_id}/members", status_code=201, responses=MANAGE_RESPONSES)
def add_member(workspace_id: uuid.UUID, body: MemberIn, manager: CurrentManager) -> MemberOut:
    """Add a member (owners and admins; only an owner adds an owner)."""
    with management_session(workspace_id) as session:
        return MemberOut.of(
            service.add_member(session, manager, workspace_id, body.user_id, body.role)
        )


@router.patch("/{workspace_id}/members/{user_id}", responses=MANAGE_RESPONSES)
def change_role(
    workspace_id: uuid.UUID, user_id: UserPath, body: MemberPatch, manager: CurrentManager
) -> MemberOut:
    """Change a member's role; the last owner stays an owner."""
    with management_session(workspace_id) as session:
        return MemberOut.of(service.change_role(session, manager, workspace_id, user_id, body.role))


@router.delete("/{workspace_id}/members/{user_id}", status_code=204, responses=MANAGE_RESPONSES)
def remove_member(workspace_id: uuid.UUID, user_id: UserPath, manager: CurrentManager) -> Response:
    """Remove a member; the last owner cannot be removed."""
    with management_session(workspace_id) as session:
        service.remove_member(session, manager, workspace_id, user_id)
    return Response(status_code=204)
