"""Publishing with media the way the publisher does it: fetch and check, then publish."""

from __future__ import annotations

from typing import Any

from herald.media import Fetcher, prepare
from herald.providers.base import (
    Account,
    Media,
    MemoryLedger,
    PostDraft,
    PublishResult,
    TokenSet,
    UploadLedger,
)
from herald.sandbox import SandboxClient
from herald.settings import Settings


def publish(
    provider: Any,
    account: Account,
    tokens: TokenSet,
    settings: Settings,
    *media: Media,
    text: str = "with media",
    ledger: UploadLedger | None = None,
    **draft_settings: Any,
) -> PublishResult:
    draft = PostDraft(text, "k-media", media=media, settings=draft_settings)
    provider.validate(draft, account)
    with Fetcher(settings) as fetcher:  # holds the files until the upload is done
        ready = prepare(draft, provider, account, fetcher, ledger or MemoryLedger())
        result: PublishResult = provider.publish(ready, account, tokens)
    return result


def seeded_account(sandbox: SandboxClient, network: str, handle: str) -> tuple[Account, TokenSet]:
    """A fresh sandbox account of ``network`` and its access token."""
    seed = sandbox.create_account(network, handle=handle)
    return Account(seed["account_id"], handle=handle), TokenSet(seed["access_token"])
