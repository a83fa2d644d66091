"""JWT keys from the issuer's JWK set, served by a real HTTP server on loopback: verified by
kid, cached, fetched again when a rotation brings a new kid, never more often than the
minimum interval for kids nobody knows; the static key still serves tokens without a kid."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from herald.security.auth import InvalidToken, verify_token
from herald.settings import Settings, get_settings


class Issuer:
    """Serves ``keys`` as a JWK set and counts the fetches."""

    def __init__(self) -> None:
        self.private: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                keys = []
                for kid, key in issuer.private.items():
                    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                    keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/.well-known/jwks.json"

    def rotate(self) -> str:
        """A new signing key replaces the old ones; its kid."""
        kid = uuid.uuid4().hex[:8]
        self.private = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        return kid

    def token(self, kid: str, role: str = "authenticated") -> str:
        claims = {"sub": "user-1", "role": role, "exp": datetime.now(UTC) + timedelta(minutes=5)}
        return jwt.encode(claims, self.private[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    found = Issuer()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _settings(issuer: Issuer, **update: Any) -> Settings:
    return get_settings().model_copy(
        update={"jwt_jwks_url": issuer.url, "jwt_audience": None, **update}
    )


def test_keys_come_from_the_jwks_and_rotate_without_a_restart(issuer: Issuer) -> None:
    settings = _settings(issuer, jwt_jwks_min_refresh_s=0.0)
    first = issuer.rotate()
    assert verify_token(issuer.token(first), settings).subject == "user-1"
    assert verify_token(issuer.token(first), settings).subject == "user-1"
    assert issuer.fetches == 1  # cached

    second = issuer.rotate()  # the issuer rotates its key
    assert verify_token(issuer.token(second), settings).subject == "user-1"
    assert issuer.fetches == 2


def test_unknown_kids_are_refused_and_refetch_at_most_once_per_interval(issuer: Issuer) -> None:
    settings = _settings(issuer, jwt_jwks_min_refresh_s=3600.0)
    kid = issuer.rotate()
    verify_token(issuer.token(kid), settings)
    stranger = Issuer()
    try:
        forged_kid = stranger.rotate()
        for _ in range(3):
            with pytest.raises(InvalidToken) as refused:
                verify_token(stranger.token(forged_kid), settings)
            assert refused.value.reason == "kid"
    finally:
        stranger.server.shutdown()
        stranger.server.server_close()
    assert issuer.fetches <= 2


def test_a_token_without_a_kid_is_verified_with_the_static_key(issuer: Issuer) -> None:
    settings = _settings(issuer)
    secret = settings.jwt_secret
    assert secret is not None
    token = jwt.encode(
        {"sub": "user-2", "role": "authenticated", "exp": datetime.now(UTC) + timedelta(minutes=5)},
        secret.get_secret_value(),
        algorithm="HS256",
    )
    assert verify_token(token, settings).subject == "user-2"
    assert issuer.fetches == 0
