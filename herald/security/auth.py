"""API authentication: bearer JWTs signed by the host application (DESIGN.md §6).

Tokens carry the claims Supabase issues: ``sub`` is the user id and ``role`` is
``authenticated`` for a signed-in user or ``service_role`` for the project's service key.
Only the roles in ``HERALD_JWT_ACCEPTED_ROLES`` (by default those two) are accepted: the
public ``anon`` key, or any role the host application invents later (``admin``…), is refused.
The configured key decides the algorithm, never the token's header: with
``HERALD_JWT_PUBLIC_KEY`` set only RS256 is accepted, otherwise only HS256 with
``HERALD_JWT_SECRET``. With ``HERALD_JWT_JWKS_URL`` a token that names a ``kid`` is verified
with that key of the issuer's JWK set (RS/ES/PS algorithms, as the key says), fetched and
cached, and fetched again when a new kid appears: keys rotate without a restart. ``exp`` is
required; ``aud`` is checked when ``HERALD_JWT_AUDIENCE`` is
set.

Membership decides the workspace. A user names it with ``X-Workspace-ID`` (optional when the
user belongs to exactly one); the service role may name any existing workspace and must name
one. Errors::

    AuthError               401, the request carries no usable identity
    ├── MissingCredentials  no ``Authorization: Bearer`` header at all
    └── InvalidToken        malformed, badly signed, expired, wrong audience or algorithm
        └── RoleNotAccepted 403, a valid token whose role is not an accepted one
    WorkspaceRequired       400, several workspaces are possible and none was named
    WorkspaceDenied         404, the named workspace is not one of the caller's
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from herald.models import Membership, Role, Workspace
from herald.settings import Settings

SERVICE_ROLE = "service_role"
LEEWAY_S = 5  # clock skew tolerated between the host application and Herald


class AuthError(Exception):
    code = "unauthorized"
    status = 401

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class MissingCredentials(AuthError):
    code = "missing_credentials"


class InvalidToken(AuthError):
    code = "invalid_token"


class RoleNotAccepted(InvalidToken):
    """The token is genuine but speaks for a role this API does not serve."""

    code = "role_not_accepted"
    status = 403


class WorkspaceRequired(Exception):
    code = "workspace_required"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkspaceDenied(Exception):
    """The named workspace is not the caller's. ``exists`` tells the audit log whether this
    was a reach into another tenant; the caller never learns it."""

    code = "workspace_not_found"
    status = 404
    message = "no such workspace"

    def __init__(self, workspace_id: uuid.UUID | None, *, exists: bool) -> None:
        super().__init__(self.message)
        self.workspace_id = workspace_id
        self.exists = exists


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for."""

    subject: str | None  # the user id; None for the service role
    role: str

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE_ROLE


@dataclass(frozen=True, slots=True)
class Principal:
    """An identity acting in one workspace."""

    identity: Identity
    workspace_id: uuid.UUID
    membership_role: Role | None  # None for the service role


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if authorization is None or not authorization.strip():
        raise MissingCredentials("an Authorization: Bearer token is required", reason="missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <token>'", reason="scheme")
    return token.strip()


_jwks_clients: dict[tuple[str, float, float], jwt.PyJWKClient] = {}


def _jwks_client(settings: Settings) -> jwt.PyJWKClient:
    """One cached client per JWKS URL: the key set is kept ``HERALD_JWT_JWKS_CACHE_S`` and
    fetched again at once for a ``kid`` it lacks (a rotation), at most every
    ``HERALD_JWT_JWKS_MIN_REFRESH_S`` (so unknown kids cannot hammer the issuer)."""
    assert settings.jwt_jwks_url
    key = (settings.jwt_jwks_url, settings.jwt_jwks_cache_s, settings.jwt_jwks_min_refresh_s)
    if key not in _jwks_clients:
        _jwks_clients[key] = jwt.PyJWKClient(
            settings.jwt_jwks_url,
            cache_jwk_set=True,
            lifespan=settings.jwt_jwks_cache_s,
            cooldown_duration=settings.jwt_jwks_min_refresh_s,
            timeout=10,
        )
    return _jwks_clients[key]


def _key_for(token: str, settings: Settings) -> tuple[jwt.PyJWK | str, str]:
    """The key and algorithm to verify ``token`` with: from the JWKS by its ``kid`` when a
    JWKS URL is set and the token names a kid, else the static key."""
    if settings.jwt_jwks_url:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is not valid", reason="header") from None
        if isinstance(kid, str) and kid:
            try:
                found = _jwks_client(settings).get_signing_key(kid)
            except jwt.PyJWKClientConnectionError:
                raise InvalidToken("the key set cannot be fetched now", reason="jwks") from None
            except jwt.PyJWKClientError:
                raise InvalidToken("no key of the key set has this kid", reason="kid") from None
            if found.algorithm_name not in JWKS_ALGORITHMS:
                raise InvalidToken("the key's algorithm is not accepted", reason="algorithm")
            return found, found.algorithm_name
    return _verification_key(settings)


#: Algorithms a key from the JWKS may have (asymmetric only: a JWKS is public).
JWKS_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"})


def _verification_key(settings: Settings) -> tuple[str, str]:
    if settings.jwt_public_key:
        return settings.jwt_public_key, "RS256"
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value(), "HS256"
    raise RuntimeError(
        "set HERALD_JWT_SECRET, HERALD_JWT_PUBLIC_KEY or HERALD_JWT_JWKS_URL to authenticate "
        "requests"
    )


def check_configured(settings: Settings) -> None:
    """Refuse to start an API that could not verify any token."""
    if not settings.jwt_jwks_url:
        _verification_key(settings)


def verify_token(token: str, settings: Settings) -> Identity:
    """The identity a token carries, or :class:`InvalidToken`."""
    key, algorithm = _key_for(token, settings)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            leeway=LEEWAY_S,
            options={"require": ["exp"], "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired", reason="expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("the token is not for this audience", reason="audience") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("the token's algorithm is not accepted", reason="algorithm") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("the token is not valid", reason=type(exc).__name__) from None
    role, subject = claims.get("role"), claims.get("sub")
    if not isinstance(role, str):
        raise InvalidToken("the token names no role", reason="role")
    if role not in settings.jwt_accepted_roles:
        raise RoleNotAccepted("the token's role is not accepted here", reason="role")
    if role == SERVICE_ROLE:
        return Identity(subject=None, role=SERVICE_ROLE)
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidToken("the token has no subject", reason="subject")
    if len(subject) > MAX_SUBJECT or not subject.isprintable():
        # Signed, but no user id Herald can store in a membership or an audit row (NUL, a lone
        # surrogate, control characters, past the columns' length).
        raise InvalidToken("the token's subject is not a user id", reason="subject")
    return Identity(subject=subject, role=role)


#: The longest ``sub`` taken: the columns that store a user id (memberships, audit actors).
MAX_SUBJECT = 200

#: A UUID as RFC 9562 writes it: 8-4-4-4-12 hexadecimal digits, either case.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def workspace_uuid(value: str) -> uuid.UUID | None:
    """The workspace ``X-Workspace-ID`` names, or None: an identifier has one spelling, the
    canonical hyphenated UUID (``uuid.UUID`` also reads braces, a ``urn:uuid:`` prefix and bare
    hex, which a header naming a tenant should not)."""
    text = value.strip()
    return uuid.UUID(text) if _CANONICAL_UUID.fullmatch(text) else None


def resolve_workspace(session: Session, identity: Identity, requested: str | None) -> Principal:
    """The workspace this request acts in, chosen by ``X-Workspace-ID`` and membership."""
    wanted = workspace_uuid(requested) if requested is not None else None
    if requested is not None and wanted is None:
        raise WorkspaceDenied(None, exists=False)
    if identity.is_service:
        if wanted is None:
            raise WorkspaceRequired("the service role must name a workspace in X-Workspace-ID")
        if not _live(session, wanted):
            raise WorkspaceDenied(wanted, exists=False)
        return Principal(identity, wanted, None)

    memberships = session.scalars(
        select(Membership)
        .join(Workspace, Workspace.id == Membership.workspace_id)
        .where(Membership.user_id == identity.subject, Workspace.deleted_at.is_(None))
    ).all()
    if wanted is None:
        if len(memberships) == 1:
            return Principal(identity, memberships[0].workspace_id, memberships[0].role)
        if not memberships:
            raise WorkspaceDenied(None, exists=False)
        raise WorkspaceRequired("you belong to several workspaces: name one in X-Workspace-ID")
    for membership in memberships:
        if membership.workspace_id == wanted:
            return Principal(identity, wanted, membership.role)
    raise WorkspaceDenied(wanted, exists=_live(session, wanted))


def _live(session: Session, workspace_id: uuid.UUID) -> bool:
    """Whether the workspace exists and is not deleted (a deleted one is found by nobody)."""
    workspace = session.get(Workspace, workspace_id)
    return workspace is not None and workspace.deleted_at is None
