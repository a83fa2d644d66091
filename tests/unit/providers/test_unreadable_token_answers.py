"""Exchanging an authorization code is a write that cannot be repeated (the code is single
use): a 2xx answer that cannot be read is ambiguous in every adapter, never transient (which
would invite a retry that must fail) and never permanent (the grant may well exist)."""

from __future__ import annotations

import httpx
import pytest

from herald.providers.base import AmbiguousOutcome
from herald.providers.bluesky import BlueskyProvider
from herald.providers.registry import get_provider
from herald.settings import Settings

BODIES = [b"", b"<html>oops</html>", b"[]", b'"ok"', b'{"unexpected": 1}', b'{"access_token": 7}']
OAUTH_NETWORKS = ["x", "linkedin", "mastodon", "threads", "discord", "reddit"]


def answering(body: bytes, status: int) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return httpx.MockTransport(handler), seen


def settings() -> Settings:
    return Settings(env="development").with_sandbox("http://sandbox.invalid")


@pytest.mark.parametrize("status", [200, 202])
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("network", OAUTH_NETWORKS)
def test_an_unreadable_2xx_to_a_code_exchange_is_ambiguous(
    network: str, body: bytes, status: int
) -> None:
    transport, seen = answering(body, status)
    provider = get_provider(network, settings(), transport=transport)
    try:
        with pytest.raises(AmbiguousOutcome):
            provider.exchange_code("one-time-code", "https://app/cb", "verifier")
    finally:
        provider.close()  # type: ignore[attr-defined]
    assert len(seen) == 1  # the spent code is never sent again inside the call


@pytest.mark.parametrize("status", [200, 202])
@pytest.mark.parametrize("body", BODIES)
def test_an_unreadable_2xx_to_a_bluesky_login_is_ambiguous(body: bytes, status: int) -> None:
    transport, seen = answering(body, status)
    provider = BlueskyProvider(settings(), transport=transport)
    try:
        with pytest.raises(AmbiguousOutcome):
            provider.login("carol.bsky.social", "app-password")
    finally:
        provider.close()
    assert len(seen) == 1
