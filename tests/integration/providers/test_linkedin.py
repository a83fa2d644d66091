"""LinkedIn adapter against the sandbox: Posts API, escaping, errors, non-rotating refresh."""

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
    Account,
    AmbiguousOutcome,
    AuthExpired,
    ContentInvalid,
    PermanentError,
    PostDraft,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
    Unknown,
)
from herald.providers.linkedin import LinkedInProvider
from herald.sandbox import SandboxClient
from herald.settings import Settings


@pytest.fixture
def li(sandbox_settings: Settings) -> Iterator[LinkedInProvider]:
    provider = LinkedInProvider(sandbox_settings, client_id="herald", client_secret="shh-secret")
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("linkedin", handle="Dana")
    account = Account(external_id=seed["account_id"], handle="Dana")
    return account, TokenSet(seed["access_token"], seed["refresh_token"])


def draft(text: str = "Shipping Herald (v1) #launch @team", key: str = "li-1") -> PostDraft:
    return PostDraft(text=text, idempotency_key=key)


def test_publish_reads_the_urn_from_the_header_and_escapes_little_text(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    result = li.publish(draft(), account, tokens)
    assert result.external_id.startswith("urn:li:share:")
    assert result.url == f"https://www.linkedin.com/feed/update/{result.external_id}"
    [post] = sandbox.posts("linkedin")
    assert post["id"] == result.external_id
    assert post["text"] == draft().text  # the sandbox unescapes what the adapter escaped


def test_duplicate_is_permanent_with_the_network_code(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, tokens = seeded
    li.publish(draft(), account, tokens)
    with pytest.raises(PermanentError) as info:
        li.publish(draft(key="li-2"), account, tokens)
    assert info.value.provider_code == "DUPLICATE_POST"
    assert info.value.http_status == 422


def test_overlong_commentary_is_refused_before_any_call(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    with pytest.raises(ContentInvalid) as info:
        li.publish(draft("x" * 3001), account, tokens)
    assert info.value.rule == "linkedin.max_length"
    assert sandbox.requests("linkedin") == []


def test_429_without_headers_resets_at_next_midnight_utc(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject("linkedin", "rate_limit", times=1)
    with pytest.raises(RateLimited) as info:
        li.publish(draft(), account, tokens)
    reset = info.value.reset_at
    assert (reset.hour, reset.minute, reset.second) == (0, 0, 0)
    assert timedelta(0) < reset - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "error", "status": 500}, AmbiguousOutcome),
        ({"kind": "error", "status": 500, "applied": True}, AmbiguousOutcome),
        ({"kind": "error", "status": 503}, TransientError),
        ({"kind": "error", "status": 403}, PermanentError),
        ({"kind": "error", "status": 426}, PermanentError),
        ({"kind": "drop", "applied": True}, AmbiguousOutcome),
    ],
)
def test_injected_faults_map_to_one_error_class(
    li: LinkedInProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    error: type[Exception],
) -> None:
    account, tokens = seeded
    sandbox.inject("linkedin", times=1, path="/rest/posts", **fault)
    with pytest.raises(error) as info:
        li.publish(draft(), account, tokens)
    assert type(info.value) is error
    assert len(sandbox.posts("linkedin")) == (1 if fault.get("applied") else 0)


def test_ambiguous_outcome_cannot_be_reconciled(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, tokens = seeded
    assert isinstance(li.find_post(draft(), account, tokens, datetime.now(UTC)), Unknown)


def test_expired_token_then_refresh_keeps_the_same_refresh_token(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("linkedin", account.external_id)
    with pytest.raises(AuthExpired) as info:
        li.publish(draft(), account, tokens)
    assert info.value.provider_code == "EXPIRED_ACCESS_TOKEN"
    fresh = li.refresh(account, tokens)
    assert fresh.refresh_token == tokens.refresh_token
    assert fresh.refresh_expires_at is not None
    li.publish(draft(), account, fresh)
    again = li.refresh(account, fresh)  # not single use
    assert again.refresh_token == tokens.refresh_token
    with pytest.raises(ReauthRequired):
        li.refresh(account, TokenSet("x", refresh_token="unknown"))


def test_authorize_exchange_and_metrics(
    li: LinkedInProvider, seeded: tuple[Account, TokenSet]
) -> None:
    account, _ = seeded
    request = li.authorize("https://app.example/cb", "st")
    location = httpx.get(request.url).headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens, connected = li.exchange_code(code, "https://app.example/cb", None)
    assert connected.external_id == account.external_id
    result = li.publish(draft(), connected, tokens)
    metrics = li.fetch_metrics(result.external_id, connected, tokens)
    assert (metrics.likes, metrics.replies) == (7, 2)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_the_sandbox_answers_maps_to_exactly_one_class(
    li: LinkedInProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject("linkedin", "error", status=status, applied=applied, times=1, path="/rest/posts")
    with pytest.raises(ProviderError) as info:
        li.publish(
            draft(f"property {status} {applied} {uuid.uuid4()}", key=str(uuid.uuid4())),
            account,
            tokens,
        )
    assert type(info.value) in ERROR_CLASSES
    assert type(info.value) is not ContentInvalid
