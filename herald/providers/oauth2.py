"""OAuth 2 mechanics every adapter shares, from a maintained library (authlib) rather than by
hand: the PKCE pair (RFC 7636, S256). The networks' token endpoints and their error shapes
stay in each adapter, which knows them."""

from __future__ import annotations

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

#: RFC 7636 allows 43 to 128 characters; 64 of authlib's alphabet carry about 380 bits.
VERIFIER_LENGTH = 64


def pkce_pair() -> tuple[str, str]:
    """A fresh (code verifier, S256 code challenge) pair."""
    verifier = generate_token(VERIFIER_LENGTH)
    return verifier, create_s256_code_challenge(verifier)
