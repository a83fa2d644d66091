"""Workspaces and their members: create, list, rename, delete (soft); add, re-role, remove.

A deleted workspace keeps its rows but is found by nobody, and its integrations are disabled
so none of its posts publishes (the dispatcher claims no post of a disabled integration). A
workspace always keeps at least one owner.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from herald.connections.access import (
    MANAGERS,
    Manager,
    Refused,
    admin_action,
    load_workspace,
    require,
)
from herald.models import Integration, IntegrationStatus, Membership, Role, Workspace, utcnow

OWNERS = frozenset({Role.OWNER})
EVERYONE = frozenset(Role)


@dataclass(frozen=True, slots=True)
class WorkspaceView:
    workspace: Workspace
    role: Role | None  # the caller's; None for the service role
    members: int


def _slug(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "workspace"
    return f"{base}-{secrets.token_hex(3)}"


def _members(session: Session, workspace_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.workspace_id == workspace_id)
        )
        or 0
    )


def create_workspace(
    session: Session,
    manager: Manager,
    name: str,
    *,
    slug: str | None = None,
    owner_user_id: str | None = None,
    workspace_id: uuid.UUID | None = None,
) -> WorkspaceView:
    """A new workspace whose owner is the caller (or ``owner_user_id``, for the service role).

    ``workspace_id`` is the new workspace's id when the caller chose it to open the session's
    tenant scope on it before this insert."""
    owner = manager.user_id or owner_user_id
    workspace = Workspace(id=workspace_id or uuid.uuid4(), name=name, slug=slug or _slug(name))
    try:
        with session.begin_nested():
            session.add(workspace)
            session.flush()
    except IntegrityError:
        raise Refused(409, "slug_taken", "another workspace already uses this slug") from None
    if owner is not None:
        session.add(Membership(workspace_id=workspace.id, user_id=owner, role=Role.OWNER))
    admin_action(
        session,
        manager,
        "workspace.create",
        workspace_id=workspace.id,
        resource_type="workspace",
        resource_id=str(workspace.id),
        message="workspace created",
        details={"owner_user_id": owner},
    )
    session.flush()
    return WorkspaceView(workspace, Role.OWNER if manager.user_id else None, int(owner is not None))


def list_workspaces(session: Session, manager: Manager) -> list[WorkspaceView]:
    """The caller's live workspaces (every live one for the service role), oldest first."""
    others = aliased(Membership)
    count = (
        select(func.count())
        .select_from(others)
        .where(others.workspace_id == Workspace.id)
        .correlate(Workspace)
        .scalar_subquery()
    )
    if manager.is_service:
        rows = session.execute(
            select(Workspace, count)
            .where(Workspace.deleted_at.is_(None))
            .order_by(Workspace.created_at, Workspace.id)
        ).all()
        return [WorkspaceView(ws, None, n) for ws, n in rows]
    mine = session.execute(
        select(Workspace, Membership.role, count)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == manager.user_id, Workspace.deleted_at.is_(None))
        .order_by(Workspace.created_at, Workspace.id)
    ).all()
    return [WorkspaceView(ws, role, n) for ws, role, n in mine]


def get_workspace(session: Session, manager: Manager, workspace_id: uuid.UUID) -> WorkspaceView:
    workspace, role = load_workspace(session, manager, workspace_id)
    return WorkspaceView(workspace, role, _members(session, workspace_id))


def rename_workspace(
    session: Session, manager: Manager, workspace_id: uuid.UUID, name: str
) -> WorkspaceView:
    workspace = require(session, manager, workspace_id)
    previous = workspace.name
    workspace.name = name
    admin_action(
        session,
        manager,
        "workspace.rename",
        workspace_id=workspace_id,
        resource_type="workspace",
        resource_id=str(workspace_id),
        message="workspace renamed",
        details={"from": previous, "to": name},
    )
    session.flush()
    return get_workspace(session, manager, workspace_id)


def delete_workspace(session: Session, manager: Manager, workspace_id: uuid.UUID) -> None:
    """Soft-delete: hidden from everyone, its integrations disabled (nothing publishes)."""
    workspace = require(session, manager, workspace_id, OWNERS)
    workspace.deleted_at = utcnow()
    disabled = session.execute(
        update(Integration)
        .where(Integration.workspace_id == workspace_id)
        .values(status=IntegrationStatus.DISABLED, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    admin_action(
        session,
        manager,
        "workspace.delete",
        workspace_id=workspace_id,
        resource_type="workspace",
        resource_id=str(workspace_id),
        message="workspace deleted (soft): its integrations are disabled",
        details={"integrations_disabled": getattr(disabled, "rowcount", None)},
    )


# -- members ------------------------------------------------------------------------------------


def list_members(session: Session, manager: Manager, workspace_id: uuid.UUID) -> list[Membership]:
    require(session, manager, workspace_id, EVERYONE)
    return list(
        session.scalars(
            select(Membership)
            .where(Membership.workspace_id == workspace_id)
            .order_by(Membership.created_at, Membership.user_id)
        )
    )


def _membership(session: Session, workspace_id: uuid.UUID, user_id: str) -> Membership:
    membership = session.scalar(
        select(Membership).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    )
    if membership is None:
        raise Refused(404, "member_not_found", "no such member in this workspace")
    return membership


def _may_grant(session: Session, manager: Manager, workspace_id: uuid.UUID, role: Role) -> None:
    """Only an owner (or the service role) makes, unmakes or removes an owner."""
    if role is Role.OWNER:
        require(session, manager, workspace_id, OWNERS)


def _keep_an_owner(session: Session, workspace_id: uuid.UUID, leaving: Membership) -> None:
    if leaving.role is not Role.OWNER:
        return
    # The owners' rows are locked before they are counted: two owners removing each other (or
    # stepping down) at once would each count two and leave none. The second waits for the
    # first to commit, then counts what is left.
    owners = session.scalars(
        select(Membership.user_id)
        .where(Membership.workspace_id == workspace_id, Membership.role == Role.OWNER)
        .with_for_update()
    ).all()
    if len(owners) <= 1:
        raise Refused(409, "last_owner", "a workspace keeps at least one owner")


def add_member(
    session: Session, manager: Manager, workspace_id: uuid.UUID, user_id: str, role: Role
) -> Membership:
    require(session, manager, workspace_id, MANAGERS)
    _may_grant(session, manager, workspace_id, role)
    membership = Membership(workspace_id=workspace_id, user_id=user_id, role=role)
    try:
        with session.begin_nested():
            session.add(membership)
            session.flush()
    except IntegrityError:
        raise Refused(409, "already_member", "this user is already a member") from None
    admin_action(
        session,
        manager,
        "member.add",
        workspace_id=workspace_id,
        resource_type="membership",
        resource_id=user_id,
        message="member added",
        details={"role": role.value},
    )
    return membership


def change_role(
    session: Session, manager: Manager, workspace_id: uuid.UUID, user_id: str, role: Role
) -> Membership:
    require(session, manager, workspace_id, MANAGERS)
    membership = _membership(session, workspace_id, user_id)
    previous = membership.role
    if previous is role:
        return membership
    touches_owner = Role.OWNER in {previous, role}
    _may_grant(session, manager, workspace_id, Role.OWNER if touches_owner else role)
    _keep_an_owner(session, workspace_id, membership)
    membership.role = role
    admin_action(
        session,
        manager,
        "member.role",
        workspace_id=workspace_id,
        resource_type="membership",
        resource_id=user_id,
        message="member's role changed",
        details={"from": previous.value, "to": role.value},
    )
    session.flush()
    return membership


def remove_member(
    session: Session, manager: Manager, workspace_id: uuid.UUID, user_id: str
) -> None:
    require(session, manager, workspace_id, MANAGERS)
    membership = _membership(session, workspace_id, user_id)
    _may_grant(session, manager, workspace_id, membership.role)
    _keep_an_owner(session, workspace_id, membership)
    session.delete(membership)
    admin_action(
        session,
        manager,
        "member.remove",
        workspace_id=workspace_id,
        resource_type="membership",
        resource_id=user_id,
        message="member removed",
        details={"role": membership.role.value},
    )
    session.flush()
