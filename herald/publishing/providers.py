"""One adapter per network per process: adapters hold an httpx client and its pooled
connections, which are worth reusing across posts (and are thread-safe)."""

from __future__ import annotations

import threading

from herald.providers.base import Provider
from herald.providers.registry import get_provider
from herald.settings import Settings

_lock = threading.Lock()
_adapters: dict[tuple[str, int], Provider] = {}


def provider_for(name: str, settings: Settings) -> Provider:
    key = (name, id(settings))
    with _lock:
        adapter = _adapters.get(key)
        if adapter is None:
            adapter = _adapters[key] = get_provider(name, settings)
        return adapter


def forget_adapters() -> None:
    """Drop every cached adapter (after a fork, or when the settings change in tests)."""
    with _lock:
        _adapters.clear()
