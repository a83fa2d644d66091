"""Between an ``Integration`` row and what a provider call needs (Account, TokenSet).

Tokens are opened only for the duration of a call and sealed again when they rotate; the
plaintext never lands in a log, a span or an error message.
"""

from __future__ import annotations

from typing import Any

from herald.models import Integration, utcnow
from herald.providers.base import Account, TokenSet
from herald.security.crypto import KeyRing, TokenBinding


def binding_of(integration: Integration) -> TokenBinding:
    return TokenBinding(integration.workspace_id, integration.provider, integration.id)


def account_of(integration: Integration) -> Account:
    return Account(
        external_id=integration.external_account_id,
        handle=integration.handle,
        base_url=integration.base_url,
        settings=dict(integration.settings or {}),
    )


def open_tokens(integration: Integration, keys: KeyRing) -> TokenSet:
    binding = binding_of(integration)
    refresh = integration.refresh_token_ciphertext
    return TokenSet(
        access_token=keys.open(integration.access_token_ciphertext, binding),
        refresh_token=keys.open(refresh, binding) if refresh else None,
        expires_at=integration.token_expires_at,
        refresh_expires_at=integration.refresh_expires_at,
        scopes=tuple(integration.scopes or ()),
    )


def sealed_values(integration: Integration, tokens: TokenSet, keys: KeyRing) -> dict[str, Any]:
    """The column values that store ``tokens`` on ``integration``, sealed under the active key,
    with the next token version. A network that does not rotate the refresh token returns none:
    the old one is kept (resealed)."""
    binding = binding_of(integration)
    values: dict[str, Any] = {
        "access_token_ciphertext": keys.seal(tokens.access_token, binding),
        "token_key_id": keys.active,
        "token_expires_at": tokens.expires_at,
        "token_version": integration.token_version + 1,
        "last_refreshed_at": utcnow(),
    }
    if tokens.refresh_token is not None:
        values["refresh_token_ciphertext"] = keys.seal(tokens.refresh_token, binding)
    elif integration.refresh_token_ciphertext:
        values["refresh_token_ciphertext"] = keys.reseal(
            integration.refresh_token_ciphertext, binding
        )
    if tokens.refresh_expires_at is not None:
        values["refresh_expires_at"] = tokens.refresh_expires_at
    if tokens.scopes:
        values["scopes"] = list(tokens.scopes)
    return values


def store_tokens(integration: Integration, tokens: TokenSet, keys: KeyRing) -> None:
    """Seal ``tokens`` into the row object and bump its token version (see
    :func:`sealed_values`; a refresh writes the same values with a conditional UPDATE)."""
    for column, value in sealed_values(integration, tokens, keys).items():
        setattr(integration, column, value)
