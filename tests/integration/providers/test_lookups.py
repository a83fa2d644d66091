"""Every adapter that reconciles by reading the account back pages through the window since
the attempt with the network's own parameters and largest page size, proves absence only when
it has read the whole window, and says Unknown when its page budget or the network's own
limit stops it. Real HTTP against the sandbox; requests counted in its journal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.providers.base import Absent, Account, Lookup, PostDraft, TokenSet, Unknown
from herald.providers.registry import get_provider
from herald.sandbox import SandboxClient
from herald.settings import Settings

#: network → (sandbox account fields, settings Herald keeps on the connection, lookup path)
NETWORKS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "x": ({}, {}, "/tweets"),
    "mastodon": ({}, {}, "/statuses"),
    "threads": ({}, {}, "/threads"),
    "reddit": ({"handle": "alice"}, {"subreddit": "herald_test"}, "/submitted"),
    "discord": (
        {"settings": {"mode": "bot", "channels": ["5002"]}},
        {"mode": "bot", "channel_id": "5002"},
        "/messages",
    ),
}
AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


class Connection:
    """One sandbox account and the adapter that reads it."""

    def __init__(self, network: str, sandbox: SandboxClient, settings: Settings) -> None:
        fields, herald_settings, self.path = NETWORKS[network]
        self.network, self.sandbox = network, sandbox
        seed = sandbox.create_account(network, **fields)
        self.account = Account(seed["account_id"], handle=seed["handle"], settings=herald_settings)
        self.tokens = TokenSet(seed["access_token"], seed.get("refresh_token"))
        self.provider = get_provider(network, settings)
        sandbox.set_rate_limit(network, limit=100_000, window_s=60)

    def post(self, count: int, text: str = "busy") -> None:
        texts = [f"{text} {n}" for n in range(count)]
        self.sandbox.seed_posts(
            self.network, self.account.external_id, texts, **self.account.settings
        )

    def look_up(self, text: str, since: datetime = AN_HOUR_AGO) -> tuple[Lookup, int]:
        """The lookup's answer and how many listing requests it made."""
        before = max((e["seq"] for e in self.sandbox.requests(self.network)), default=0)
        draft = PostDraft(text=text, idempotency_key="lookup-1", settings={"title": text})
        answer = self.provider.find_post(draft, self.account, self.tokens, since)
        calls = [
            e
            for e in self.sandbox.requests(self.network, since=before)
            if e["method"] == "GET" and self.path in e["path"]
        ]
        return answer, len(calls)


@pytest.fixture
def connection(
    request: pytest.FixtureRequest, sandbox: SandboxClient, sandbox_settings: Settings
) -> Iterator[Connection]:
    made = Connection(request.param, sandbox, sandbox_settings)
    yield made
    made.provider.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("connection", "requests"),
    # 250 posts: 100 + 100 + 50, except Mastodon (40 a page, and an empty page ends it).
    [("x", 3), ("mastodon", 8), ("threads", 3), ("reddit", 3), ("discord", 3)],
    indirect=["connection"],
)
def test_absence_is_proven_by_reading_the_whole_window_in_the_largest_pages(
    connection: Connection, requests: int
) -> None:
    connection.post(250)
    answer, calls = connection.look_up("never posted")
    assert isinstance(answer, Absent)
    assert calls == requests


@pytest.mark.parametrize("connection", sorted(NETWORKS), indirect=True)
def test_a_window_longer_than_the_page_budget_is_unknown_after_exactly_the_budget(
    connection: Connection, sandbox_settings: Settings
) -> None:
    connection.provider = get_provider(
        connection.network, sandbox_settings.model_copy(update={"reconcile_max_pages": 2})
    )
    connection.post(250)
    answer, calls = connection.look_up("never posted")
    assert isinstance(answer, Unknown)
    assert "2 pages" in answer.reason
    assert calls == 2


@pytest.mark.parametrize(
    ("connection", "served"), [("x", 3200), ("reddit", 1000)], indirect=["connection"]
)
def test_a_listing_that_ends_only_because_the_network_serves_no_older_posts_proves_nothing(
    connection: Connection, served: int, sandbox_settings: Settings
) -> None:
    connection.provider = get_provider(
        connection.network, sandbox_settings.model_copy(update={"reconcile_max_pages": 40})
    )
    connection.post(served + 20)
    answer, _ = connection.look_up("never posted")
    assert isinstance(answer, Unknown)
    assert f"newest {served}" in answer.reason


@pytest.mark.parametrize("connection", sorted(NETWORKS), indirect=True)
def test_the_same_text_posted_before_the_window_is_not_taken_for_the_post(
    connection: Connection,
) -> None:
    connection.post(1, text="said it before")  # "said it before 0", an hour before the window
    connection.sandbox.advance_clock(3600)
    connection.post(120)
    answer, _ = connection.look_up("said it before 0", since=datetime.now(UTC) + timedelta(55 * 60))
    assert isinstance(answer, Absent)
