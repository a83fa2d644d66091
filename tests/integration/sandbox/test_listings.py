"""The sandbox's listings page as each network documents it (parameter names, page-size
limits, cursors, where a listing ends), seeded accounts look like published ones, and a
``garble`` fault answers a 2xx the client cannot read. Raw HTTP, no adapter involved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from herald.sandbox import SandboxClient, SandboxServer


class Account:
    def __init__(self, sandbox: SandboxClient, url: str, network: str, **fields: Any) -> None:
        seed = sandbox.create_account(network, **fields)
        self.id, self.handle, self.token = seed["account_id"], seed["handle"], seed["access_token"]
        self.base = f"{url}/{network}"
        self.network, self.sandbox = network, sandbox
        sandbox.set_rate_limit(network, limit=100_000, window_s=60)

    def seed(self, count: int, **settings: Any) -> list[str]:
        texts = [f"post {n}" for n in range(count)]
        return self.sandbox.seed_posts(self.network, self.id, texts, **settings)

    def get(self, path: str, **params: Any) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.token}"}
        if self.network == "discord":
            auth = {"Authorization": f"Bot {self.token}"}
        if self.network == "threads":
            params["access_token"] = self.token
        return httpx.get(self.base + path, params=params, headers=auth)


@pytest.fixture
def url(sandbox_server: SandboxServer) -> str:
    return sandbox_server.url


def test_x_timeline_pages_by_next_token_and_serves_the_newest_3200(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "x")
    ids = me.seed(3210)
    path = f"/2/users/{me.id}/tweets"
    assert me.get(path, max_results=101).status_code == 400
    assert me.get(path, max_results=4).status_code == 400
    assert me.get(path, pagination_token="bm9wZQ").status_code == 400
    first = me.get(path, max_results=100).json()
    assert [t["id"] for t in first["data"]] == ids[::-1][:100]  # newest first
    second = me.get(path, max_results=100, pagination_token=first["meta"]["next_token"]).json()
    assert second["data"][0]["id"] == ids[::-1][100]
    token, pages = None, 0
    while True:
        page = me.get(path, max_results=100, **({"pagination_token": token} if token else {}))
        pages += 1
        token = page.json()["meta"].get("next_token")
        if token is None:
            break
    assert pages == 32  # 3,200 posts and no more, though the account has 3,210


def test_mastodon_statuses_page_by_max_id_with_a_link_header_on_every_non_empty_page(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "mastodon")
    ids = me.seed(45)
    path = f"/api/v1/accounts/{me.id}/statuses"
    first = me.get(path, limit=80)
    assert len(first.json()) == 40  # limit is cut to 40
    assert first.json()[0]["id"] == ids[-1]
    next_url = first.links["next"]["url"]
    assert f"max_id={ids[5]}" in next_url
    last = httpx.get(next_url, headers={"Authorization": f"Bearer {me.token}"})
    assert [s["id"] for s in last.json()] == ids[:5][::-1]
    beyond = httpx.get(last.links["next"]["url"], headers={"Authorization": f"Bearer {me.token}"})
    assert beyond.json() == []
    assert "link" not in beyond.headers
    newer = me.get(path, min_id=ids[10], limit=3).json()
    assert [s["id"] for s in newer] == [ids[13], ids[12], ids[11]]


def test_threads_list_pages_by_after_cursor_with_next_only_while_older_posts_remain(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "threads")
    ids = me.seed(130)
    path = f"/v1.0/{me.id}/threads"
    first = me.get(path, limit=500).json()
    assert len(first["data"]) == 100  # limit is cut to 100
    assert "next" in first["paging"]
    after = first["paging"]["cursors"]["after"]
    rest = me.get(path, limit=100, after=after).json()
    assert [p["id"] for p in rest["data"]] == ids[:30][::-1]
    assert "next" not in rest["paging"]
    both = me.get(path, after=after, before=rest["paging"]["cursors"]["before"])
    assert both.status_code == 400
    assert both.json()["error"]["code"] == 100
    assert me.get(path, limit=25).json()["data"][0]["id"] == ids[-1]


def test_bluesky_list_records_pages_by_cursor_in_record_key_order(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "bluesky")
    me.seed(120)
    path = "/xrpc/com.atproto.repo.listRecords"
    query = {"repo": me.id, "collection": "app.bsky.feed.post"}
    assert me.get(path, **query, limit=101).status_code == 400
    first = me.get(path, **query).json()
    assert len(first["records"]) == 50  # the default
    keys = [r["uri"].rsplit("/", 1)[1] for r in first["records"]]
    assert keys == sorted(keys, reverse=True)
    seen = list(keys)
    cursor = first["cursor"]
    while True:
        page = me.get(path, **query, limit=100, cursor=cursor).json()
        seen += [r["uri"].rsplit("/", 1)[1] for r in page["records"]]
        if not page["records"]:
            assert "cursor" not in page
            break
        cursor = page["cursor"]
    assert len(seen) == len(set(seen)) == 120


def test_reddit_listing_pages_by_fullname_and_reaches_back_1000(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "reddit")
    ids = me.seed(1010, subreddit="herald_test")
    path = f"/user/{me.handle}/submitted"
    first = me.get(path, limit=500).json()["data"]
    assert first["dist"] == 100  # limit is cut to 100
    assert first["after"] == f"t3_{ids[::-1][99]}"
    assert first["before"] is None
    after, pages = first["after"], 1
    while after:
        after = me.get(path, limit=100, after=after).json()["data"]["after"]
        pages += 1
    assert pages == 10  # 1,000 posts and no more, though the account has 1,010
    child = first["children"][0]["data"]
    assert (child["subreddit"], child["title"]) == ("herald_test", "post 1009")


def test_discord_history_pages_by_before_with_limits_discord_enforces(
    sandbox: SandboxClient, url: str
) -> None:
    me = Account(sandbox, url, "discord", settings={"mode": "bot", "channels": ["5002"]})
    ids = me.seed(130, channel_id="5002")
    path = "/channels/5002/messages"
    assert me.get(path, limit=101).status_code == 400
    assert me.get(path, limit=0).status_code == 400
    assert me.get(path, before=ids[0], after=ids[1]).status_code == 400
    first = me.get(path, limit=100).json()
    assert [m["id"] for m in first] == ids[::-1][:100]
    rest = me.get(path, limit=100, before=first[-1]["id"]).json()
    assert [m["id"] for m in rest] == ids[:30][::-1]
    assert len(me.get(path).json()) == 50  # the default
    assert [m["id"] for m in me.get(path, after=ids[9], limit=3).json()] == ids[10:13][::-1]


def test_seeding_an_unknown_account_or_network_is_refused(sandbox: SandboxClient, url: str) -> None:
    body = {"network": "x", "account_id": "nobody", "texts": ["hi"]}
    assert httpx.post(f"{url}/_sandbox/posts", json=body).status_code == 404
    body["network"] = "myspace"
    assert httpx.post(f"{url}/_sandbox/posts", json=body).status_code == 404


@pytest.mark.parametrize("body", ["", "<html>bad gateway</html>", "[]", '{"unexpected": 1}'])
def test_a_garble_fault_answers_2xx_with_the_given_body_after_applying(
    sandbox: SandboxClient, url: str, body: str
) -> None:
    me = Account(sandbox, url, "x")
    sandbox.inject("x", "garble", body=body, applied=True, method="POST", times=1)
    answer = httpx.post(
        f"{url}/x/2/tweets", json={"text": "hi"}, headers={"Authorization": f"Bearer {me.token}"}
    )
    assert (answer.status_code, answer.text) == (200, body)
    assert [p["text"] for p in sandbox.posts("x")] == ["hi"]
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.inject("x", "garble", status=500)
    with pytest.raises(httpx.HTTPStatusError):
        sandbox.inject("x", "error", status=200)
