"""The sandbox core over real HTTP: control API, journal, faults, rate limits, robustness."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter

from herald.sandbox import SandboxClient, SandboxServer, run_in_thread
from herald.sandbox.core import Sandbox, SandboxNetwork

MY_NETWORKS = ("x", "linkedin", "mastodon", "bluesky")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_seeded_account_tokens_work_and_listings_never_show_token_values(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x", handle="eve", access_ttl_s=60)
    assert seed["expires_in"] <= 60
    me = httpx.get(f"{sandbox_server.url}/x/2/users/me", headers=bearer(seed["access_token"]))
    assert me.json()["data"]["username"] == "eve"
    listings = json.dumps([sandbox.requests(), sandbox.tokens("x"), sandbox.posts()])
    assert seed["access_token"] not in listings
    assert seed["refresh_token"] not in listings
    [entry] = sandbox.requests("x")
    assert (entry["method"], entry["path"], entry["account_id"], entry["status"]) == (
        "GET",
        "/2/users/me",
        seed["account_id"],
        200,
    )


def test_query_strings_are_left_out_of_the_journal(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x")
    url = f"{sandbox_server.url}/x/2/users/{seed['account_id']}/tweets?access_token=leak"
    httpx.get(url, headers=bearer(seed["access_token"]))
    assert "leak" not in json.dumps(sandbox.requests())


def test_advancing_the_clock_expires_access_tokens(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x")
    sandbox.advance_clock(7201)
    me = httpx.get(f"{sandbox_server.url}/x/2/users/me", headers=bearer(seed["access_token"]))
    assert me.status_code == 401


def test_reset_forgets_everything(sandbox: SandboxClient, sandbox_server: SandboxServer) -> None:
    seed = sandbox.create_account("mastodon")
    sandbox.inject("mastodon", "error", status=500)
    sandbox.reset()
    assert sandbox.requests() == []
    assert sandbox.posts() == []
    me = httpx.get(
        f"{sandbox_server.url}/mastodon/api/v1/accounts/verify_credentials",
        headers=bearer(seed["access_token"]),
    )
    assert me.status_code == 401  # the token is gone, and the fault with it


def test_faults_for_the_next_n_calls_then_stop(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x")
    sandbox.inject("x", "error", status=502, times=2, account_id=seed["account_id"])
    url = f"{sandbox_server.url}/x/2/users/me"
    statuses = [httpx.get(url, headers=bearer(seed["access_token"])).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]


def test_an_echo_fault_quotes_the_request_back_in_the_networks_error_shape(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("mastodon")
    sandbox.inject("mastodon", "error", status=401, echo=True, message="bad token", times=1)
    response = httpx.post(
        f"{sandbox_server.url}/mastodon/api/v1/statuses?access_token=in-the-query",
        headers=bearer(seed["access_token"]),
        data={"status": "hello"},
    )
    assert response.status_code == 401
    message = response.json()["error"]
    assert message.startswith("bad token: POST /mastodon/api/v1/statuses?access_token=in-the-query")
    assert f"Authorization: Bearer {seed['access_token']}" in message
    assert "status=hello" in message
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.inject("mastodon", "error", echo=True, applied=True)


def test_a_token_prefix_starts_every_token_of_the_account_rotations_included(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x", token_prefix="CANARY-")
    assert seed["access_token"].startswith("CANARY-x-at-")
    assert seed["refresh_token"].startswith("CANARY-x-rt-")
    rotated = httpx.post(
        f"{sandbox_server.url}/x/2/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": seed["refresh_token"]},
        auth=("sandbox-x-client", "sandbox-x-secret"),
    ).json()
    assert rotated["access_token"].startswith("CANARY-x-at-")
    assert rotated["refresh_token"].startswith("CANARY-x-rt-")
    assert not sandbox.create_account("x")["access_token"].startswith("CANARY")


def test_a_share_of_calls_fails_reproducibly_with_a_seed(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    def run() -> list[int]:
        sandbox.reset()
        seed = sandbox.create_account("x")
        sandbox.inject("x", "error", status=500, probability=0.5, seed=7)
        url = f"{sandbox_server.url}/x/2/users/me"
        with httpx.Client(headers=bearer(seed["access_token"])) as client:
            return [client.get(url).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert 3 <= first.count(500) <= 17


def test_latency_is_added_before_answering(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    seed = sandbox.create_account("x")
    sandbox.inject("x", "latency", ms=300, times=1)
    response = httpx.get(f"{sandbox_server.url}/x/2/users/me", headers=bearer(seed["access_token"]))
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3


def test_per_token_rate_limit_counts_each_token_separately(
    sandbox: SandboxClient, sandbox_server: SandboxServer
) -> None:
    sandbox.set_rate_limit("bluesky", limit=2, window_s=60)
    one, two = sandbox.create_account("bluesky"), sandbox.create_account("bluesky")
    url = f"{sandbox_server.url}/bluesky/xrpc/com.atproto.repo.listRecords"

    def call(seed: dict[str, str]) -> httpx.Response:
        params = {"repo": seed["account_id"], "collection": "app.bsky.feed.post"}
        return httpx.get(url, params=params, headers=bearer(seed["access_token"]))

    answers = [call(one), call(one), call(one), call(two)]
    assert [a.status_code for a in answers] == [200, 200, 429, 200]
    assert answers[1].headers["ratelimit-remaining"] == "0"
    assert answers[2].json()["error"] == "RateLimitExceeded"
    assert answers[2].headers["ratelimit-policy"] == "2;w=60"


@pytest.mark.parametrize("network", MY_NETWORKS)
@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/2/tweets", b"{not json"),
        ("POST", "/rest/posts", b"[1, 2"),
        ("POST", "/api/v1/statuses", b"\xff\xfe"),
        ("POST", "/xrpc/com.atproto.repo.createRecord", b'{"repo": 1}'),
        ("GET", "/xrpc/com.atproto.repo.getRecord", b""),
        ("DELETE", "/no/such/path", b""),
        ("POST", "/oauth/token", b"%%%"),
    ],
)
def test_malformed_or_unknown_requests_get_the_network_shape_never_a_crash(
    sandbox: SandboxClient,
    sandbox_server: SandboxServer,
    network: str,
    method: str,
    path: str,
    content: bytes,
) -> None:
    seed = sandbox.create_account(network)
    response = httpx.request(
        method,
        f"{sandbox_server.url}/{network}{path}",
        content=content,
        headers=bearer(seed["access_token"]) | {"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert isinstance(response.json(), dict)
    assert not any(entry["crashed"] for entry in sandbox.requests())


def test_unknown_network_is_a_404(sandbox_server: SandboxServer) -> None:
    response = httpx.get(f"{sandbox_server.url}/myspace/api")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown network"


class _Crashing(SandboxNetwork):
    name = "crashy"

    def routes(self, sb: Sandbox) -> APIRouter:
        router = APIRouter()

        @router.get("/boom")
        async def boom() -> dict[str, str]:
            raise RuntimeError("bug in a handler")

        return router


@pytest.fixture
def crashy_server() -> Iterator[SandboxServer]:
    with run_in_thread(networks={"crashy": _Crashing()}) as server:
        yield server


def test_a_handler_crash_is_answered_in_the_network_shape_and_journaled(
    crashy_server: SandboxServer,
) -> None:
    response = httpx.get(f"{crashy_server.url}/crashy/boom")
    assert response.status_code == 500
    assert response.json()["error"]
    [entry] = SandboxClient(crashy_server.url).requests("crashy")
    assert entry["crashed"] is True


def test_fault_specs_are_validated(sandbox: SandboxClient) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.inject("x", "latency", applied=True)
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.inject("nowhere", "error")
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.set_options("x", no_such_switch=True)
    with pytest.raises(httpx.HTTPStatusError):  # repeating is for garble only
        sandbox.inject("x", "error", body="x", repeat=2)


def test_an_account_id_the_network_cannot_have_is_refused_at_seeding(
    sandbox: SandboxClient,
) -> None:
    """A Telegram account is the bot, whose id is a number (a chat such as "@news" is not):
    seeded anyway, every message it sent crashed the sandbox's handler."""
    with pytest.raises(httpx.HTTPStatusError) as refused:
        sandbox.create_account("telegram", account_id="@news")
    assert refused.value.response.status_code == 422
    assert "number" in refused.value.response.text
    assert sandbox.create_account("telegram", account_id="7000000042")["account_id"] == "7000000042"
