"""Who is calling, in which workspace, and the audit trail of that decision.

Denials and service-role uses are recorded in transactions of their own: a request that fails
afterwards must not roll its audit row back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald import db
from herald.models import Integration, Post
from herald.security import audit
from herald.security.audit import Actor, EventType, Outcome, Severity
from herald.security.auth import (
    Identity,
    InvalidToken,
    Principal,
    WorkspaceDenied,
    bearer_token,
    resolve_workspace,
    verify_token,
)
from herald.settings import Settings

# Declares the scheme in the OpenAPI document; the header itself is checked below so that a
# missing token and a bad one can be told apart (only the latter is an audited denial).
bearer_scheme = HTTPBearer(auto_error=False, description="A JWT signed by the host application")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    actor: Actor

    @property
    def workspace_id(self) -> uuid.UUID:
        return self.principal.workspace_id


def settings_of(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


def audit_now(event_type: EventType, **fields: Any) -> None:
    """Record one audit event in its own transaction, committed now."""
    with db.session_scope() as session:
        db.service_scope(session, "audit.record")  # the chain spans every workspace
        audit.record(session, event_type, **fields)


def audit_change(
    session: Session,
    caller: Caller,
    event_type: EventType,
    *,
    action: str,
    resource: tuple[str, uuid.UUID],
    message: str,
    **details: Any,
) -> None:
    """Record a change a caller made, in the transaction that makes it."""
    audit.record(
        session,
        event_type,
        actor=caller.actor,
        severity=Severity.MEDIUM if caller.actor.type == "service_role" else Severity.LOW,
        workspace_id=caller.workspace_id,
        action=action,
        resource_type=resource[0],
        resource_id=str(resource[1]),
        message=message,
        details=details,
    )


def request_actor(request: Request, kind: str, actor_id: str | None) -> Actor:
    return Actor(
        kind,
        actor_id,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def identify(request: Request) -> tuple[Identity, Actor]:
    """The verified identity of the request's bearer token, or 401 (an audited denial when a
    token was presented and is bad)."""
    try:
        identity = verify_token(
            bearer_token(request.headers.get("authorization")), settings_of(request)
        )
    except InvalidToken as exc:
        audit_now(
            EventType.ACCESS_DENIED,
            actor=request_actor(request, "anonymous", None),
            outcome=Outcome.DENIED,
            severity=Severity.MEDIUM,
            message=exc.message,
            details={"reason": exc.reason, "method": request.method, "path": request.url.path},
        )
        raise
    actor = request_actor(
        request, "service_role" if identity.is_service else "user", identity.subject
    )
    return identity, actor


def member_workspace(
    request: Request, identity: Identity, actor: Actor, requested: str | None
) -> Principal:
    """The workspace a member acts in, or 400/404 (a reach into another tenant is audited)."""
    try:
        with db.session_scope() as session:
            # Which workspaces the caller belongs to: read before any workspace is chosen.
            db.service_scope(session, "api.resolve_workspace")
            return resolve_workspace(session, identity, requested)
    except WorkspaceDenied as exc:
        audit_now(
            EventType.CROSS_TENANT_ATTEMPT if exc.exists else EventType.ACCESS_DENIED,
            actor=actor,
            outcome=Outcome.DENIED,
            severity=Severity.HIGH if exc.exists else Severity.MEDIUM,
            workspace_id=exc.workspace_id,
            resource_type="workspace",
            resource_id=str(exc.workspace_id) if exc.workspace_id else None,
            message="workspace is not one of the caller's",
            details={"method": request.method, "path": request.url.path},
        )
        raise


def authenticate(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    x_workspace_id: Annotated[
        str | None,
        Header(
            alias="X-Workspace-ID",
            description=(
                "The workspace to act in (optional for a member of exactly one). Any value "
                "that is not one of the caller's workspaces answers 404."
            ),
            json_schema_extra={"format": "uuid"},
        ),
    ] = None,
) -> Caller:
    """The verified caller and its workspace, or a 401/400/404 error."""
    identity, actor = identify(request)
    principal = member_workspace(request, identity, actor, x_workspace_id)
    if identity.is_service:
        audit_now(
            EventType.SERVICE_ROLE_USE,
            actor=actor,
            severity=Severity.MEDIUM,
            workspace_id=principal.workspace_id,
            message="service role used on the API",
            details={"method": request.method, "path": request.url.path},
        )
    return Caller(principal, actor)


CurrentCaller = Annotated[Caller, Depends(authenticate)]


@contextmanager
def tenant_session(caller: Caller) -> Iterator[Session]:
    """A transaction limited to the caller's workspace (RLS on Postgres; queries filter by
    ``workspace_id`` as well)."""
    with db.session_scope() as session:
        db.tenant_scope(session, caller.workspace_id)
        yield session


def report_if_foreign(
    caller: Caller, model: type[Post] | type[Integration], ident: uuid.UUID
) -> None:
    """Record a cross-tenant attempt when ``ident`` exists in another workspace. The caller
    then answers 404 exactly as for a missing row.

    The row belongs to no workspace (operators see it; ``herald audit``, the suspicious-activity
    job): in the asker's workspace its presence alone, readable through ``GET /audit``, would
    tell the asker that the id exists elsewhere, which the 404 exists to hide."""
    resource = model.__tablename__.rstrip("s")
    with db.session_scope() as session:
        db.service_scope(session, f"api.{resource}_owner_check")
        owner = session.scalar(select(model.workspace_id).where(model.id == ident))
        if owner is None or owner == caller.workspace_id:
            return
        audit.record(
            session,
            EventType.CROSS_TENANT_ATTEMPT,
            actor=caller.actor,
            outcome=Outcome.DENIED,
            severity=Severity.HIGH,
            workspace_id=None,
            resource_type=resource,
            resource_id=str(ident),
            message=f"{resource} of another workspace requested",
            details={
                "asker_workspace_id": str(caller.workspace_id),
                "owner_workspace_id": str(owner),
            },
        )
