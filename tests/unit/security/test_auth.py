"""Token verification: the configured key picks the algorithm; every bad token is refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from herald.models import utcnow
from herald.security.auth import (
    SERVICE_ROLE,
    Identity,
    InvalidToken,
    MissingCredentials,
    RoleNotAccepted,
    bearer_token,
    check_configured,
    verify_token,
)
from herald.settings import Settings

SECRET = "unit-test-secret-0123456789abcdef0123456789"
HS256 = Settings(env="development", jwt_secret=SecretStr(SECRET))


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body = {"sub": "user-1", "role": "authenticated", "exp": utcnow() + timedelta(minutes=5)}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rs256(rsa_key: rsa.RSAPrivateKey) -> Settings:
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Settings(env="development", jwt_public_key=public.decode(), jwt_secret=SecretStr(SECRET))


def test_a_user_token_gives_its_subject_and_role() -> None:
    assert verify_token(token(), HS256) == Identity(subject="user-1", role="authenticated")


def test_the_service_key_gives_the_service_role_without_a_subject() -> None:
    identity = verify_token(token(sub=None, role=SERVICE_ROLE), HS256)

    assert identity.is_service
    assert identity.subject is None


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": utcnow() - timedelta(minutes=1)}, "expired"),
        ({"exp": None}, "MissingRequiredClaimError"),
        ({"role": None}, "role"),
        ({"sub": None}, "subject"),
        ({"sub": "  "}, "subject"),
    ],
)
def test_tokens_without_a_usable_identity_are_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        verify_token(token(**claims), HS256)

    assert refused.value.reason == reason


@pytest.mark.parametrize("role", ["anon", "admin", "supabase_admin", "Authenticated", ""])
def test_a_genuine_token_of_a_role_not_accepted_is_refused_as_forbidden(role: str) -> None:
    with pytest.raises(RoleNotAccepted) as refused:
        verify_token(token(role=role), HS256)

    assert refused.value.status == 403
    assert refused.value.reason == "role"


def test_the_accepted_roles_are_configurable() -> None:
    users_only = HS256.model_copy(update={"jwt_accepted_roles": ["authenticated"]})
    editors = HS256.model_copy(update={"jwt_accepted_roles": ["authenticated", "editor"]})

    with pytest.raises(RoleNotAccepted):
        verify_token(token(sub=None, role=SERVICE_ROLE), users_only)
    assert verify_token(token(role="editor"), editors) == Identity(subject="user-1", role="editor")


@pytest.mark.parametrize("roles", ["", "authenticated,anon", " , "])
def test_settings_refuse_no_roles_or_the_public_anon_role(roles: str) -> None:
    with pytest.raises(ValueError, match="HERALD_JWT_ACCEPTED_ROLES"):
        Settings(env="development", jwt_accepted_roles=roles)


def test_accepted_roles_read_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_JWT_ACCEPTED_ROLES", "authenticated, editor")

    assert Settings(env="development").jwt_accepted_roles == ["authenticated", "editor"]


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(InvalidToken):
        verify_token(token(key="another-secret-0123456789abcdef0123456789"), HS256)


def test_an_unsigned_token_is_refused() -> None:
    with pytest.raises(InvalidToken) as refused:
        verify_token(token(key="", algorithm="none"), HS256)

    assert refused.value.reason == "algorithm"


def test_with_a_public_key_only_rs256_is_accepted(
    rs256: Settings, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert verify_token(token(key=rsa_key, algorithm="RS256"), rs256).subject == "user-1"
    with pytest.raises(InvalidToken) as refused:
        verify_token(token(), rs256)  # HS256 with the (still configured) secret
    assert refused.value.reason == "algorithm"


def test_the_audience_is_checked_only_when_configured() -> None:
    strict = HS256.model_copy(update={"jwt_audience": "authenticated"})

    assert verify_token(token(aud="authenticated"), strict).subject == "user-1"
    assert verify_token(token(aud="anything"), HS256).subject == "user-1"
    for claims in ({"aud": "other"}, {}):
        with pytest.raises(InvalidToken):
            verify_token(token(**claims), strict)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, MissingCredentials),
        ("", MissingCredentials),
        ("Basic dXNlcjpwYXNz", InvalidToken),
        ("Bearer", InvalidToken),
        ("Bearer   ", InvalidToken),
    ],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_an_api_without_any_key_refuses_to_start() -> None:
    with pytest.raises(RuntimeError, match="HERALD_JWT_SECRET"):
        check_configured(Settings(env="development", jwt_secret=None))
