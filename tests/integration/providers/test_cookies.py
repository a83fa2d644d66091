"""Herald's provider clients are shared by every workspace a worker serves; a cookie one
account's answer sets must never ride along on another account's call (networks do set them:
Reddit's ``session_tracker``, LinkedIn's ``lidc``). The sandbox sets a session cookie on every
answer to a known token and journals whether a request carried one back."""

from __future__ import annotations

from typing import Any

import pytest

from herald.providers.base import Account, PostDraft, TokenSet
from herald.providers.registry import get_provider
from herald.sandbox import SandboxClient
from herald.settings import Settings

#: network → (sandbox account fields, Herald connection settings)
NETWORKS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "x": ({}, {}),
    "linkedin": ({}, {}),
    "mastodon": ({}, {}),
    "bluesky": ({}, {}),
    "threads": ({}, {}),
    "telegram": ({}, {}),
    "reddit": ({"handle": "alice"}, {"subreddit": "herald_test"}),
    "discord": ({"settings": {"mode": "bot", "channels": ["5002"]}}, {"mode": "bot"}),
}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_no_account_carries_a_cookie_another_accounts_answer_set(
    network: str, sandbox: SandboxClient, sandbox_settings: Settings
) -> None:
    fields, connection = NETWORKS[network]
    provider = get_provider(network, sandbox_settings)
    try:
        for n in range(2):  # two accounts (two workspaces' connections), one client
            seed = sandbox.create_account(network, **fields)
            if network == "discord":
                connection = connection | {"channel_id": "5002"}
            account = Account(seed["account_id"], handle=seed["handle"], settings=connection)
            tokens = TokenSet(seed["access_token"], seed.get("refresh_token"))
            draft = PostDraft(text=f"post {n}", idempotency_key=f"k-{n}")
            provider.publish(draft, account, tokens)
    finally:
        provider.close()  # type: ignore[attr-defined]
    calls = sandbox.requests(network)
    assert len({call["account_id"] for call in calls} - {None}) == 2, calls
    assert all(call["status"] is not None and call["status"] < 400 for call in calls), calls
    assert [call for call in calls if call["cookie"]] == []
