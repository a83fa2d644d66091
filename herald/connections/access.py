"""Who may manage a workspace, and the one refusal type of this package.

Owners and admins manage a workspace (rename, members, connections); only an owner deletes
it, makes another owner or removes one; any member reads. The service role may do everything
and every use of it is audited. A workspace the caller does not belong to, or a deleted one,
is "not found" — the caller never learns that it exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import db
from herald.models import Membership, Role, Workspace
from herald.security import audit
from herald.security.audit import Actor, EventType, Outcome, Severity

MANAGERS = frozenset({Role.OWNER, Role.ADMIN})


class Refused(Exception):
    """A request this package says no to: HTTP-like status, stable code, human message."""

    def __init__(
        self, status: int, code: str, message: str, *, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


@dataclass(frozen=True, slots=True)
class Manager:
    """Who acts: a user (``user_id``) or the service role (``user_id`` None)."""

    actor: Actor
    user_id: str | None

    @property
    def is_service(self) -> bool:
        return self.user_id is None


def workspace_not_found() -> Refused:
    return Refused(404, "workspace_not_found", "no such workspace")


def load_workspace(
    session: Session, manager: Manager, workspace_id: uuid.UUID
) -> tuple[Workspace, Role | None]:
    """The live workspace and the caller's role in it (None for the service role), or 404."""
    workspace = session.get(Workspace, workspace_id)
    if workspace is None or workspace.deleted_at is not None:
        raise workspace_not_found()
    if manager.is_service:
        return workspace, None
    role = session.scalar(
        select(Membership.role).where(
            Membership.workspace_id == workspace_id, Membership.user_id == manager.user_id
        )
    )
    if role is None:
        deny(session, manager, workspace_id, "not a member", cross_tenant=True)
        raise workspace_not_found()
    return workspace, role


def require(
    session: Session,
    manager: Manager,
    workspace_id: uuid.UUID,
    allowed: frozenset[Role] = MANAGERS,
) -> Workspace:
    """The workspace, if the caller's role is one of ``allowed`` (403 otherwise, audited)."""
    workspace, role = load_workspace(session, manager, workspace_id)
    if role is not None and role not in allowed:
        deny(session, manager, workspace_id, f"a {role.value} cannot do this")
        raise Refused(
            403,
            "forbidden",
            f"your role ({role.value}) cannot do this; ask an owner or admin",
            details={"role": role.value},
        )
    return workspace


def deny(
    session: Session,
    manager: Manager,
    workspace_id: uuid.UUID,
    reason: str,
    *,
    cross_tenant: bool = False,
) -> None:
    """Record a refused management action in a transaction of its own: the caller raises
    next, and its own transaction rolls back."""
    del session  # the refusal must outlive the caller's transaction
    with db.session_scope() as own:
        db.service_scope(own, "audit.record")  # the chain spans every workspace
        _record_denial(own, manager, workspace_id, reason, cross_tenant=cross_tenant)


def _record_denial(
    session: Session, manager: Manager, workspace_id: uuid.UUID, reason: str, *, cross_tenant: bool
) -> None:
    audit.record(
        session,
        EventType.CROSS_TENANT_ATTEMPT if cross_tenant else EventType.ACCESS_DENIED,
        actor=manager.actor,
        outcome=Outcome.DENIED,
        severity=Severity.HIGH if cross_tenant else Severity.MEDIUM,
        workspace_id=workspace_id,
        resource_type="workspace",
        resource_id=str(workspace_id),
        message=reason,
    )


def admin_action(
    session: Session,
    manager: Manager,
    action: str,
    *,
    workspace_id: uuid.UUID,
    resource_type: str,
    resource_id: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Audit one successful management action (a service-role action at higher severity)."""
    audit.record(
        session,
        EventType.ADMIN_ACTION,
        actor=manager.actor,
        severity=Severity.HIGH if manager.is_service else Severity.MEDIUM,
        workspace_id=workspace_id,
        resource_type=resource_type,
        resource_id=resource_id,
        message=message,
        details={"action": action, **(details or {})},
    )
