"""X adapter against the sandbox over real HTTP: publish, errors, rotation, reconciliation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.providers.base import (
    ERROR_CLASSES,
    Absent,
    Account,
    AmbiguousOutcome,
    AuthExpired,
    ContentInvalid,
    Found,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
    Unknown,
)
from herald.providers.registry import get_provider
from herald.providers.x import XProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings


@pytest.fixture
def x(sandbox_settings: Settings) -> Iterator[XProvider]:
    provider = get_provider("x", sandbox_settings)  # credentials come from the settings
    assert isinstance(provider, XProvider)
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("x", handle="alice")
    account = Account(external_id=seed["account_id"], handle="alice")
    return account, TokenSet(seed["access_token"], seed["refresh_token"])


def draft(text: str = "hello from herald", key: str = "k-1") -> PostDraft:
    return PostDraft(text=text, idempotency_key=key)


def test_publish_creates_exactly_one_post_with_its_public_url(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    result = x.publish(draft(), account, tokens)
    posts = sandbox.posts("x")
    assert [p["id"] for p in posts] == [result.external_id]
    assert result.url == f"https://x.com/alice/status/{result.external_id}"


def test_overlong_text_is_refused_before_any_call(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid) as info:
        x.publish(draft("é" * 281), account, tokens)
    assert info.value.rule == "x.max_weighted_length"
    # A URL weighs 23 whatever its length, so this fits.
    x.validate(draft("a" * 250 + " https://example.com/" + "p" * 200), account)
    assert sandbox.requests("x") == []


def test_expired_access_token_is_auth_expired(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("x", account.external_id)
    with pytest.raises(AuthExpired):
        x.publish(draft(), account, tokens)
    assert sandbox.posts("x") == []


def test_duplicate_text_is_permanent(x: XProvider, seeded: tuple[Account, TokenSet]) -> None:
    account, tokens = seeded
    x.publish(draft(), account, tokens)
    with pytest.raises(PermanentError) as info:
        x.publish(draft(key="k-2"), account, tokens)
    assert "duplicate" in info.value.message
    assert info.value.http_status == 403


def test_rate_limit_carries_the_reset_time_from_the_header(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_rate_limit("x", limit=1, window_s=600)
    x.publish(draft("one"), account, tokens)
    with pytest.raises(RateLimited) as info:
        x.publish(draft("two"), account, tokens)
    expected = datetime.now(UTC) + timedelta(seconds=600)
    assert abs((info.value.reset_at - expected).total_seconds()) < 5
    assert len(sandbox.posts("x")) == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "error", "status": 503}, TransientError),
        ({"kind": "error", "status": 500}, AmbiguousOutcome),
        ({"kind": "error", "status": 500, "applied": True}, AmbiguousOutcome),
        ({"kind": "drop"}, AmbiguousOutcome),
        ({"kind": "drop", "applied": True}, AmbiguousOutcome),
        ({"kind": "timeout", "ms": 2500}, AmbiguousOutcome),
        ({"kind": "error", "status": 400}, PermanentError),
        ({"kind": "error", "status": 401}, AuthExpired),
        ({"kind": "rate_limit"}, RateLimited),
    ],
)
def test_injected_faults_map_to_one_error_class(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    error: type[Exception],
) -> None:
    account, tokens = seeded
    sandbox.inject("x", times=1, path="/2/tweets", **fault)
    with pytest.raises(error) as info:
        x.publish(draft(), account, tokens)
    assert type(info.value) is error
    assert tokens.access_token not in str(info.value)
    assert len(sandbox.posts("x")) == (1 if fault.get("applied") else 0)


def test_ambiguous_publish_is_reconciled_from_the_timeline(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    since = datetime.now(UTC) - timedelta(seconds=1)
    sandbox.inject("x", "drop", applied=True, times=1, path="/2/tweets")
    with pytest.raises(AmbiguousOutcome):
        x.publish(draft(), account, tokens)
    found = x.find_post(draft(), account, tokens, since)
    assert isinstance(found, Found)
    assert found.post.external_id == sandbox.posts("x")[0]["id"]
    assert isinstance(x.find_post(draft("never sent"), account, tokens, since), Absent)


def test_a_post_with_links_is_found_although_x_shows_them_shortened(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    since = datetime.now(UTC) - timedelta(seconds=5)
    text = "Read https://example.com/a-long/path?x=1 and www.example.org now"
    sent = x.publish(draft(text), account, tokens)
    found = x.find_post(draft(text), account, tokens, since)
    assert isinstance(found, Found)
    assert found.post.external_id == sent.external_id
    assert "t.co/" in found.post.text  # as X shows it
    other = "Read https://example.com/another and www.example.org later"
    assert isinstance(x.find_post(draft(other), account, tokens, since), Absent)
    # X links a bare domain too, and Herald cannot tell: not finding it proves nothing.
    bare = x.find_post(draft("Read example.com today"), account, tokens, since)
    assert isinstance(bare, Unknown)


def test_refresh_rotates_and_reuse_revokes_the_family(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    fresh = x.refresh(account, tokens)
    assert fresh.refresh_token not in (None, tokens.refresh_token)
    assert fresh.expires_at is not None
    x.publish(draft("after refresh"), account, fresh)
    with pytest.raises(ReauthRequired):
        x.refresh(account, tokens)  # the spent token again: theft suspected
    with pytest.raises(ReauthRequired):
        x.refresh(account, fresh)  # the whole family is gone
    with pytest.raises(AuthExpired):
        x.publish(draft("revoked"), account, fresh)


def test_authorize_and_exchange_code_with_pkce(
    x: XProvider, seeded: tuple[Account, TokenSet], sandbox_settings: Settings
) -> None:
    account, _ = seeded
    request = x.authorize("https://app.example/cb", "state-1")
    query = parse_qs(urlsplit(request.url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert request.code_verifier is not None
    consent = httpx.get(request.url, follow_redirects=False)
    assert consent.status_code == 302
    back = parse_qs(urlsplit(consent.headers["location"]).query)
    assert back["state"] == ["state-1"]
    with pytest.raises(ReauthRequired):
        x.exchange_code(back["code"][0], "https://app.example/cb", "wrong-verifier")
    request = x.authorize("https://app.example/cb", "state-2")
    code = parse_qs(urlsplit(httpx.get(request.url).headers["location"]).query)["code"][0]
    tokens, connected = x.exchange_code(code, "https://app.example/cb", request.code_verifier)
    assert connected.external_id == account.external_id
    assert connected.handle == "alice"
    assert tokens.refresh_token


def test_metrics_read_public_metrics(x: XProvider, seeded: tuple[Account, TokenSet]) -> None:
    account, tokens = seeded
    result = x.publish(draft(), account, tokens)
    metrics = x.fetch_metrics(result.external_id, account, tokens)
    assert metrics.likes == 5
    assert metrics.impressions == 120
    with pytest.raises(PermanentError):
        x.fetch_metrics("999", account, tokens)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class(
    x: XProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject("x", "error", status=status, applied=applied, times=1, path="/2/tweets")
    with pytest.raises(ProviderError) as info:
        x.publish(
            draft(f"property {status} {applied} {uuid.uuid4()}", key=str(uuid.uuid4())),
            account,
            tokens,
        )
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
