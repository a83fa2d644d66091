"""Between an ``Integration`` row and what a provider call needs (Account, TokenSet).

Tokens are opened only for the duration of a call and sealed again when they rotate; the
plaintext never lands in a log, a span or an error message.
"""

from __future__ import annotations

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


def store_tokens(integration: Integration, tokens: TokenSet, keys: KeyRing) -> None:
    """Seal ``tokens`` into the row (under the active key) and bump its token version.

    A network that does not rotate the refresh token returns none: the old one is kept.
    """
    binding = binding_of(integration)
    integration.access_token_ciphertext = keys.seal(tokens.access_token, binding)
    if tokens.refresh_token is not None:
        integration.refresh_token_ciphertext = keys.seal(tokens.refresh_token, binding)
    elif integration.refresh_token_ciphertext:
        integration.refresh_token_ciphertext = keys.reseal(
            integration.refresh_token_ciphertext, binding
        )
    integration.token_key_id = keys.active
    integration.token_expires_at = tokens.expires_at
    if tokens.refresh_expires_at is not None:
        integration.refresh_expires_at = tokens.refresh_expires_at
    if tokens.scopes:
        integration.scopes = list(tokens.scopes)
    integration.token_version += 1
    integration.last_refreshed_at = utcnow()
