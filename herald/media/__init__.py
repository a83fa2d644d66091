"""Media for a publish: fetched safely to disk, checked against the network's limits, and
handed to the adapter with the ledger of what was already uploaded (docs/media.md)."""

from __future__ import annotations

from dataclasses import replace

from herald.media.fetch import Fetcher
from herald.providers.base import Account, PostDraft, Provider, UploadLedger
from herald.providers.media import check_fetched


def prepare(
    draft: PostDraft,
    provider: Provider,
    account: Account,
    fetcher: Fetcher,
    ledger: UploadLedger,
) -> PostDraft:
    """``draft`` with every media item fetched to disk and checked, except those the ledger
    already holds a live upload of (nothing to fetch for them)."""
    if not draft.media:
        return replace(draft, uploads=ledger)
    limits = provider.media_limits(account)
    items = []
    for index, media in enumerate(draft.media):
        if ledger.reuse(provider.name, index) is not None:
            items.append(media)
            continue
        file = fetcher.fetch(media.url, cap=limits.cap(media.kind), network=provider.name)
        check_fetched(limits, index + 1, media, file)
        items.append(replace(media, file=file))
    return replace(draft, media=tuple(items), uploads=ledger)


__all__ = ["Fetcher", "prepare"]
