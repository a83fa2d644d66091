"""Reading an account back, page by page, until the window since an attempt is covered.

Reconciliation may only call a post absent when it has seen everything the account published
since the attempt began: the listing ended, or it reached a post older than the window. Every
other way a search stops is :class:`~herald.providers.base.Unknown`: the page budget
(``HERALD_RECONCILE_MAX_PAGES``) ran out, or the listing ended only because the network serves
no older posts (X's newest 3,200, Reddit's 1,000). The adapters supply one function that
fetches a page in the network's own terms; the stopping rules live here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from herald.providers.base import Absent, Found, Lookup, RemotePost, Unknown


@dataclass(frozen=True, slots=True)
class Seen:
    """One item of a listing: when it was created, and the post itself if it is the one
    being looked for."""

    created_at: datetime | None
    match: RemotePost | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, newest first. ``next`` is the cursor of the next (older) page,
    None where the listing ends."""

    items: Sequence[Seen]
    next: str | None


def search_window(
    fetch: Callable[[str | None], Page],
    *,
    since: datetime,
    max_pages: int,
    network: str,
    serves_at_most: int | None = None,
) -> Lookup:
    """Page through a newest-first listing with ``fetch(cursor)`` (None: the first page).

    ``serves_at_most`` is how many items the network lists at all: a listing that ends after
    that many proves nothing about older posts.
    """
    window = f"since {since:%Y-%m-%d %H:%M:%S} UTC"
    seen = 0
    cursor: str | None = None
    for pages in range(1, max_pages + 1):
        page = fetch(cursor)
        for item in page.items:
            if item.created_at is not None and item.created_at < since:
                return Absent(
                    f"read {network}'s posts back past the window {window} ({pages} pages)"
                )
            if item.match is not None:
                return Found(item.match)
        seen += len(page.items)
        if page.next is None:
            if serves_at_most is not None and seen >= serves_at_most:
                return Unknown(
                    f"{network} lists only the newest {serves_at_most} posts and the window "
                    f"{window} reaches further back ({pages} pages read)"
                )
            return Absent(f"read all {seen} posts {network} lists {window} ({pages} pages)")
        cursor = page.next
    return Unknown(
        f"the window {window} holds more than {max_pages} pages of posts at {network} "
        "(HERALD_RECONCILE_MAX_PAGES)"
    )
