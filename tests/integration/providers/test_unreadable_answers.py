"""A 2xx answer to a publish that cannot be read (empty, not JSON, JSON of the wrong shape)
means the network probably took the post: for a write it cannot de-duplicate, every adapter
raises AmbiguousOutcome (reconcile, never resend blindly), or proves the outcome inside the
call. Never TransientError, never PermanentError. Real HTTP against the sandbox, which applies
the post and then garbles its answer; deliveries counted there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    PostDraft,
    Provider,
    PublishResult,
    TokenSet,
    TransientError,
)
from herald.providers.http import MAX_ANSWER_BYTES
from herald.providers.registry import get_provider
from herald.sandbox import SandboxClient
from herald.settings import Settings

#: (status, body) of the garbled answer: empty, not JSON, JSON of the wrong shape.
ANSWERS = [
    (200, ""),
    (200, "<html>502 Bad Gateway</html>"),
    (200, "[]"),
    (200, '"ok"'),
    (200, '{"unexpected": 1}'),
    (200, '{"errors": []}'),
    (202, ""),
    (200, "[" * 5000 + "]" * 5000),  # JSON too deep for the parser: RecursionError
]
#: network → (sandbox account fields, Herald connection settings, path of the publishing write)
NETWORKS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "x": ({}, {}, "/2/tweets"),
    "linkedin": ({}, {}, "/rest/posts"),
    "telegram": ({}, {}, "/sendMessage"),
    "reddit": ({"handle": "alice"}, {"subreddit": "herald_test"}, "/api/submit"),
    "discord": ({"settings": {"channel_id": "5001"}}, {"channel_id": "5001"}, "/webhooks/"),
    "discord-bot": (
        {"settings": {"mode": "bot", "channels": ["5002"]}},
        {"mode": "bot", "channel_id": "5002"},
        "/messages",
    ),
}
#: Networks that prove the outcome inside the call: a record key, a container's status, an
#: idempotency key that makes asking again harmless.
SELF_PROVING = {
    "bluesky": ({}, {}, "createRecord"),
    "threads": ({}, {}, "/threads_publish"),
    "mastodon": ({}, {}, "/api/v1/statuses"),
}


class Connected:
    def __init__(self, sandbox: SandboxClient, settings: Settings, name: str) -> None:
        fields, herald_settings, self.path = {**NETWORKS, **SELF_PROVING}[name]
        self.network = name.removesuffix("-bot")
        seed = sandbox.create_account(self.network, **fields)
        external = "@news" if self.network == "telegram" else seed["account_id"]
        self.account = Account(external, handle=seed["handle"], settings=herald_settings)
        self.tokens = TokenSet(seed["access_token"], seed.get("refresh_token"))
        self.provider: Provider = get_provider(self.network, settings)
        self.sandbox = sandbox

    def publish(self, answer: tuple[int, str]) -> PublishResult:
        status, body = answer
        self.sandbox.inject(
            self.network,
            "garble",
            status=status,
            body=body,
            applied=True,
            method="POST",
            path=self.path,
            times=1,
        )
        draft = PostDraft(text="the network took it", idempotency_key="k-1")
        return self.provider.publish(draft, self.account, self.tokens)


@pytest.fixture
def connected(
    request: pytest.FixtureRequest, sandbox: SandboxClient, sandbox_settings: Settings
) -> Iterator[Connected]:
    made = Connected(sandbox, sandbox_settings, request.param)
    yield made
    made.provider.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("connected", sorted(NETWORKS), indirect=True)
def test_an_unreadable_2xx_to_a_write_without_a_key_is_ambiguous(
    connected: Connected, answer: tuple[int, str]
) -> None:
    with pytest.raises(AmbiguousOutcome):
        connected.publish(answer)
    assert len(connected.sandbox.posts(connected.network)) == 1


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("connected", ["bluesky", "threads"], indirect=True)
def test_an_unreadable_2xx_is_resolved_inside_the_call_where_the_network_can_prove_it(
    connected: Connected, answer: tuple[int, str]
) -> None:
    result = connected.publish(answer)
    (post,) = connected.sandbox.posts(connected.network)
    assert result.external_id == post["id"]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("connected", ["mastodon"], indirect=True)
def test_an_unreadable_2xx_to_a_keyed_write_is_asked_again_and_answered_with_the_same_post(
    connected: Connected, answer: tuple[int, str]
) -> None:
    with pytest.raises(TransientError):  # the Idempotency-Key makes asking again harmless
        connected.publish(answer)
    draft = PostDraft(text="the network took it", idempotency_key="k-1")
    again = connected.provider.publish(draft, connected.account, connected.tokens)
    (post,) = connected.sandbox.posts("mastodon")
    assert again.external_id == post["id"]


#: A 2xx answer that goes on for 12 MiB (streamed by the sandbox): more than Herald reads.
FLOOD = {"status": 200, "body": "x" * 1024, "repeat": 12 * 1024}


def garble_next_write(connected: Connected, how: dict[str, Any]) -> None:
    """The next publishing write takes effect, then its answer is ``how``."""
    connected.sandbox.inject(
        connected.network,
        "garble",
        applied=True,
        method="POST",
        path=connected.path,
        times=1,
        **how,
    )


@pytest.mark.parametrize("connected", ["x", "telegram"], indirect=True)
def test_an_answer_past_the_bound_is_not_read_on_and_a_write_is_ambiguous(
    connected: Connected,
) -> None:
    """Herald stops reading at MAX_ANSWER_BYTES instead of holding whatever a network sends;
    the write's outcome is then unknown, as with an answer lost on the way."""
    garble_next_write(connected, FLOOD)
    draft = PostDraft(text="the network took it", idempotency_key="k-1")
    with pytest.raises(AmbiguousOutcome, match=f"more than {MAX_ANSWER_BYTES} bytes"):
        connected.provider.publish(draft, connected.account, connected.tokens)
    assert len(connected.sandbox.posts(connected.network)) == 1


@pytest.mark.parametrize("connected", ["mastodon"], indirect=True)
def test_an_answer_past_the_bound_to_a_keyed_write_is_asked_again_inside_the_call(
    connected: Connected,
) -> None:
    """A failed read of a write the network de-duplicates is asked again at once (an unreadable
    but complete answer is not: TransientError, above)."""
    garble_next_write(connected, FLOOD)
    draft = PostDraft(text="the network took it", idempotency_key="k-1")
    result = connected.provider.publish(draft, connected.account, connected.tokens)
    (post,) = connected.sandbox.posts("mastodon")
    assert result.external_id == post["id"]


#: A 2xx answer that trickles in: 20 pieces 0.4 s apart (8 s in all), each well within the
#: 1 s read timeout of ``sandbox_settings``, whose whole call may take 2 s (connect + read).
TRICKLE = {"status": 200, "body": "x", "repeat": 20, "ms": 400}


@pytest.mark.parametrize("connected", ["x", "reddit"], indirect=True)
def test_an_answer_trickling_past_the_calls_budget_is_not_waited_for(
    connected: Connected,
) -> None:
    """httpx's read timeout is per read: an answer whose every piece comes within it was read
    for as long as it trickled (a hostile instance could hold a worker until the task's time
    limit). A call now has connect + read timeout in all; past it, the write is ambiguous."""
    garble_next_write(connected, TRICKLE)
    draft = PostDraft(text="the network took it", idempotency_key="k-1")
    started = time.monotonic()
    with pytest.raises(AmbiguousOutcome, match="ReadTimeout after the request was sent"):
        connected.provider.publish(draft, connected.account, connected.tokens)
    assert time.monotonic() - started < 4.0
    assert len(connected.sandbox.posts(connected.network)) == 1


@pytest.mark.parametrize("connected", ["mastodon"], indirect=True)
def test_an_answer_trickling_past_the_budget_to_a_keyed_write_is_asked_again(
    connected: Connected,
) -> None:
    garble_next_write(connected, TRICKLE)
    draft = PostDraft(text="the network took it", idempotency_key="k-1")
    started = time.monotonic()
    result = connected.provider.publish(draft, connected.account, connected.tokens)
    assert time.monotonic() - started < 6.0
    (post,) = connected.sandbox.posts("mastodon")
    assert result.external_id == post["id"]
