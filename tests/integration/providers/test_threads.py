"""Threads adapter against the sandbox over real HTTP: the two-step publish, container checks
that keep a retry from posting twice, Graph errors, long-lived token refresh, lookups."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
    Media,
    PermanentError,
    PostDraft,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    TokenSet,
    TransientError,
)
from herald.providers.threads import ThreadsProvider
from herald.sandbox import SandboxClient, SandboxServer
from herald.settings import Settings

SINCE = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def threads(sandbox_settings: Settings) -> Iterator[ThreadsProvider]:
    provider = ThreadsProvider(
        sandbox_settings, client_id="herald-test", client_secret="s3", processing_poll_s=0.4
    )
    yield provider
    provider.close()


@pytest.fixture
def seeded(sandbox: SandboxClient) -> tuple[Account, TokenSet]:
    seed = sandbox.create_account("threads", handle="alice")
    return Account(seed["account_id"], handle="alice"), TokenSet(seed["access_token"])


def draft(text: str = "hello from herald", **settings: Any) -> PostDraft:
    return PostDraft(text=text, idempotency_key="k-1", settings=settings)


def paths(sandbox: SandboxClient) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in sandbox.requests("threads")]


def earlier_container(
    server: SandboxServer, account: Account, tokens: TokenSet, *, publish: bool
) -> str:
    """What an earlier attempt left behind: a container, published or not."""
    base = f"{server.url}/threads/v1.0/{account.external_id}"
    auth = {"access_token": tokens.access_token}
    created = httpx.post(
        f"{base}/threads", params=auth, data={"media_type": "TEXT", "text": "hello from herald"}
    )
    container = str(created.json()["id"])
    if publish:
        httpx.post(f"{base}/threads_publish", params=auth, data={"creation_id": container})
    return container


def test_publish_creates_a_container_then_publishes_it_once(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    result = threads.publish(draft(), account, tokens)
    (post,) = sandbox.posts("threads")
    assert post["id"] == result.external_id
    assert result.url is not None
    assert result.url.startswith("https://www.threads.net/@alice/post/")
    user = account.external_id
    assert paths(sandbox)[:2] == [
        f"POST /v1.0/{user}/threads",
        f"POST /v1.0/{user}/threads_publish",
    ]
    assert all(tokens.access_token not in p for p in paths(sandbox))


def test_emoji_count_their_utf8_bytes_against_the_500_limit(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    threads.validate(draft("a" * 500), account)
    threads.validate(draft("\U0001f600" * 125), account)  # 125 x 4 bytes = 500
    with pytest.raises(ContentInvalid) as info:
        threads.publish(draft("\U0001f600" * 125 + "a"), account, tokens)
    assert info.value.rule == "threads.max_length"
    assert sandbox.requests("threads") == []


def test_the_networks_length_refusal_is_permanent_code_100(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_options("threads", max_text_length=5)
    with pytest.raises(PermanentError) as info:
        threads.publish(draft("too long"), account, tokens)
    assert info.value.provider_code == "100"


def test_expired_token_is_auth_expired(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("threads", account.external_id)
    with pytest.raises(AuthExpired) as info:
        threads.publish(draft(), account, tokens)
    assert info.value.provider_code == "190"


def test_publish_answer_lost_after_publishing_finds_the_post_instead_of_reposting(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject("threads", "error", status=500, applied=True, times=1, path="threads_publish")
    result = threads.publish(draft(), account, tokens)
    (post,) = sandbox.posts("threads")
    assert result.external_id == post["id"]


def test_published_but_unlistable_is_ambiguous_never_retryable(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject("threads", "error", status=500, applied=True, times=1, path="threads_publish")
    sandbox.inject("threads", "error", status=503, method="GET", path="/threads")
    with pytest.raises(AmbiguousOutcome, match="PUBLISHED"):
        threads.publish(draft(), account, tokens)
    assert len(sandbox.posts("threads")) == 1


def test_publish_refused_before_publishing_republishes_the_same_container(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject("threads", "drop", times=1, path="threads_publish")
    threads.publish(draft(), account, tokens)
    assert len(sandbox.posts("threads")) == 1
    created = [p for p in paths(sandbox) if p.endswith("/threads")]
    assert len(created) == 1  # one container, published on the second try


def test_a_published_container_from_an_earlier_attempt_is_not_published_again(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
) -> None:
    account, tokens = seeded
    container = earlier_container(sandbox_server, account, tokens, publish=True)
    result = threads.publish(draft(threads_container_id=container), account, tokens)
    (post,) = sandbox.posts("threads")
    assert result.external_id == post["id"]


def test_an_expired_container_from_an_earlier_attempt_is_replaced(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
) -> None:
    account, tokens = seeded
    sandbox.set_options("threads", container_ttl_s=60)
    container = earlier_container(sandbox_server, account, tokens, publish=False)
    sandbox.advance_clock(61)
    result = threads.publish(draft(threads_container_id=container), account, tokens)
    (post,) = sandbox.posts("threads")
    assert result.external_id == post["id"]
    assert post["data"]["container_id"] != container


def test_an_unknown_container_from_an_earlier_attempt_is_replaced(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    threads.publish(draft(threads_container_id="404404"), account, tokens)
    assert len(sandbox.posts("threads")) == 1


def test_video_is_published_once_processing_finishes(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.set_options("threads", video_processing_s=0.5)
    video = PostDraft("clip", "k-v", media=(Media("https://cdn.example/v.mp4", "video"),))
    threads.publish(video, account, tokens)
    (post,) = sandbox.posts("threads")
    calls = paths(sandbox)
    publish_at = next(i for i, p in enumerate(calls) if p.endswith("/threads_publish"))
    status_reads = [p for p in calls[:publish_at] if p.startswith("GET ")]
    assert len(status_reads) >= 2  # polled while IN_PROGRESS, published once FINISHED
    assert all(p.endswith(post["data"]["container_id"]) for p in status_reads)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "error", "status": 400, "code": "4"}, RateLimited),
        ({"kind": "error", "status": 403, "code": "10"}, PermanentError),
        ({"kind": "rate_limit"}, RateLimited),
    ],
)
def test_container_faults_map_to_one_error_class(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    fault: dict[str, Any],
    expected: type[ProviderError],
) -> None:
    account, tokens = seeded
    sandbox.inject("threads", times=1, path="/threads", method="POST", **fault)
    with pytest.raises(ProviderError) as info:
        threads.publish(draft(), account, tokens)
    assert type(info.value) is expected
    assert sandbox.posts("threads") == []


def test_container_creation_is_retried_inside_the_call_because_a_spare_expires(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.inject(
        "threads", "error", status=500, applied=True, times=1, path="/threads", method="POST"
    )
    threads.publish(draft(), account, tokens)
    assert len(sandbox.posts("threads")) == 1
    sandbox.inject("threads", "error", status=500, code="2", path="/threads", method="POST")
    with pytest.raises(TransientError):
        threads.publish(draft("second"), account, tokens)
    assert len(sandbox.posts("threads")) == 1


def test_refresh_replaces_the_long_lived_token_once_it_is_a_day_old(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    with pytest.raises(PermanentError, match="24 hours"):
        threads.refresh(account, tokens)
    sandbox.advance_clock(25 * 3600)
    fresh = threads.refresh(account, tokens)
    assert fresh.access_token != tokens.access_token
    assert fresh.refresh_token is None
    assert fresh.expires_at is not None
    assert fresh.expires_at > datetime.now(UTC) + timedelta(days=59)
    threads.publish(draft(), account, fresh)
    assert len(sandbox.posts("threads")) == 1


def test_an_expired_token_cannot_be_refreshed(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, tokens = seeded
    sandbox.expire_tokens("threads", account.external_id)
    with pytest.raises(ReauthRequired):
        threads.refresh(account, tokens)


def test_find_post_and_metrics(threads: ThreadsProvider, seeded: tuple[Account, TokenSet]) -> None:
    account, tokens = seeded
    result = threads.publish(draft("findable"), account, tokens)
    found = threads.find_post(draft("findable"), account, tokens, SINCE)
    assert isinstance(found, Found)
    assert found.post.external_id == result.external_id
    assert isinstance(threads.find_post(draft("other"), account, tokens, SINCE), Absent)
    metrics = threads.fetch_metrics(result.external_id, account, tokens)
    assert metrics.impressions == 140
    assert metrics.likes == 9


def test_exchange_code_gets_a_long_lived_token_and_the_user(
    threads: ThreadsProvider, seeded: tuple[Account, TokenSet], sandbox: SandboxClient
) -> None:
    account, _ = seeded
    request = threads.authorize("https://app.example/cb", "st")
    assert "threads_content_publish" in request.url
    code = sandbox.authorization_code(
        "threads", account.external_id, redirect_uri="https://app.example/cb"
    )
    tokens, connected = threads.exchange_code(code, "https://app.example/cb", None)
    assert connected.external_id == account.external_id
    assert connected.handle == "alice"
    assert tokens.expires_at is not None
    assert tokens.expires_at > datetime.now(UTC) + timedelta(days=59)
    threads.publish(draft(), connected, tokens)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.integers(min_value=400, max_value=599), applied=st.booleans())
def test_any_status_on_the_publish_step_never_posts_twice(
    threads: ThreadsProvider,
    seeded: tuple[Account, TokenSet],
    sandbox: SandboxClient,
    status: int,
    applied: bool,
) -> None:
    account, tokens = seeded
    sandbox.clear_faults()
    sandbox.inject(
        "threads", "error", status=status, applied=applied, times=1, path="threads_publish"
    )
    text = f"property {status} {applied} {uuid.uuid4()}"
    result: PublishResult | None = None
    error: ProviderError | None = None
    try:
        result = threads.publish(draft(text), account, tokens)
    except ProviderError as exc:
        error = exc
    mine = [p for p in sandbox.posts("threads") if p["text"] == text]
    assert len(mine) <= 1
    if result is not None:  # the container check turned the error into the truth
        assert [p["id"] for p in mine] == [result.external_id]
    else:
        assert type(error) in ERROR_CLASSES
        assert type(error) is not ContentInvalid
        assert len(mine) == (1 if applied else 0)
