"""Resolve a provider adapter by network name.

Adding a network is one module plus one line in :data:`PROVIDERS`. An adapter class takes
``(settings, *, transport=None)`` and, when the network uses OAuth client credentials,
``client_id`` and ``client_secret`` keyword arguments; the registry passes only the keywords
the class accepts.

Client credentials come from the settings object, first match wins:

1. ``settings.provider_credentials[name]`` — a mapping with ``client_id`` / ``client_secret``
2. ``settings.<name>_client_id`` / ``settings.<name>_client_secret``

Values may be plain strings or pydantic ``SecretStr``. Missing credentials are empty strings;
:func:`missing_client_credentials` names the ones a network's refresh cannot do without
(``HERALD_SANDBOX_URL`` fills placeholders for the sandbox, see ``herald.settings``).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from herald.providers.base import Provider
from herald.settings import Settings

#: network name → "module:Class". One line per network.
PROVIDERS: dict[str, str] = {
    "x": "herald.providers.x:XProvider",
    "linkedin": "herald.providers.linkedin:LinkedInProvider",
    "mastodon": "herald.providers.mastodon:MastodonProvider",
    "bluesky": "herald.providers.bluesky:BlueskyProvider",
    "telegram": "herald.providers.telegram:TelegramProvider",
    "discord": "herald.providers.discord:DiscordProvider",
    "threads": "herald.providers.threads:ThreadsProvider",
    "reddit": "herald.providers.reddit:RedditProvider",
}


class UnknownProvider(LookupError):
    """No adapter is registered under that name."""


def provider_names() -> tuple[str, ...]:
    return tuple(sorted(PROVIDERS))


def provider_class(name: str) -> type[Any]:
    """The adapter class registered for ``name`` (imported on first use)."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(f"no provider registered as {name!r}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module_name), class_name)
    return cls


def _plain(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def client_credentials(settings: Settings, name: str) -> dict[str, str]:
    """``client_id`` and ``client_secret`` for ``name`` from the settings (see module doc)."""
    configured = getattr(settings, "provider_credentials", None)
    entry = configured.get(name) if isinstance(configured, Mapping) else None
    out: dict[str, str] = {}
    for field in ("client_id", "client_secret"):
        value = entry.get(field) if isinstance(entry, Mapping) else None
        if value is None:
            value = getattr(settings, f"{name}_{field}", None)
        out[field] = _plain(value)
    return out


def missing_client_credentials(settings: Settings, name: str) -> tuple[str, ...]:
    """The OAuth client fields ``name``'s refresh needs (``refresh_client_fields``) that the
    settings leave empty: a refresh without them is Herald's configuration error."""
    needed: tuple[str, ...] = provider_class(name).refresh_client_fields
    have = client_credentials(settings, name)
    return tuple(field for field in needed if not have.get(field))


def get_provider(
    name: str, settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> Provider:
    """Build the adapter for ``name``, pointed at ``settings.provider_base_url(name)``."""
    cls = provider_class(name)
    accepted = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"transport": transport}
    kwargs |= {k: v for k, v in client_credentials(settings, name).items() if k in accepted}
    provider: Provider = cls(settings, **kwargs)
    return provider


# One adapter per network per settings object, per process: adapters hold an httpx client and
# its pooled connections, which are worth reusing across posts (and are thread-safe).
_cache_lock = threading.Lock()
_adapters: dict[tuple[str, int], tuple[Settings, Provider]] = {}


def provider_for(name: str, settings: Settings) -> Provider:
    """The process's shared adapter for ``name`` under ``settings`` (built on first use)."""
    key = (name, id(settings))
    with _cache_lock:
        cached = _adapters.get(key)
        if cached is None or cached[0] is not settings:
            cached = _adapters[key] = (settings, get_provider(name, settings))
        return cached[1]


def built_for(settings: Settings) -> tuple[str, ...]:
    """The networks whose adapter :func:`provider_for` has built under ``settings`` in this
    process: their names are known to resolve (neither unknown nor unconfigured)."""
    with _cache_lock:
        return tuple(name for (name, _), (owner, _) in _adapters.items() if owner is settings)


def forget_adapters() -> None:
    """Drop every cached adapter (after a fork, or when the settings change in tests)."""
    with _cache_lock:
        _adapters.clear()
