"""``/api/postiz/oauth/{provider}/…`` and ``/api/postiz/integrations``: connect accounts,
list them, disconnect them.

The OAuth flow (see :mod:`herald.connections.oauth`): the host application asks
``authorize`` for the network's URL and sends the user there; the network redirects the user
back to the host application's page for that network, which calls ``callback`` with the code
and the state, and the user's JWT. Networks without OAuth connect with their own credential
(``POST /integrations/bluesky/connect``). Nothing here ever answers a token.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from herald.api.deps import Caller, CurrentCaller, report_if_foreign, settings_of
from herald.api.errors import COMMON_RESPONSES, ErrorEnvelope
from herald.api.paths import PREFIX
from herald.api.workspaces import CurrentManager, management_session
from herald.connections import accounts, oauth
from herald.connections.access import Manager, Refused
from herald.contracts import TrimmedText
from herald.models import Integration, IntegrationStatus
from herald.security.crypto import KeyRing

router = APIRouter(prefix=PREFIX, tags=["connections"], responses=COMMON_RESPONSES)

OAuthProvider = Literal["discord", "linkedin", "mastodon", "reddit", "threads", "x"]
assert set(OAuthProvider.__args__) == set(oauth.OAUTH_PROVIDERS)  # type: ignore[attr-defined]
Provider = Literal[
    "bluesky", "discord", "linkedin", "mastodon", "reddit", "telegram", "threads", "x"
]

REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorEnvelope, "description": "Your role in the workspace cannot connect"},
}
EXCHANGE: dict[int | str, dict[str, Any]] = {
    **REFUSALS,
    400: {
        "model": ErrorEnvelope,
        "description": "The state is unknown, used, expired, another network's or someone "
        "else's; or the network refused the code",
    },
    502: {"model": ErrorEnvelope, "description": "The network could not be reached"},
    503: {"model": ErrorEnvelope, "description": "Herald has no OAuth client for this network"},
}


class OAuthStart(BaseModel):
    url: str = Field(description="Send the user here")
    provider: OAuthProvider
    redirect_uri: str = Field(description="Where the network sends the user back (per network)")
    scopes: list[str]
    pkce: bool = Field(description="Whether the flow carries a PKCE S256 challenge")
    expires_at: datetime = Field(description="Call the callback before this")


class IntegrationOut(BaseModel):
    """A connected account: its state, never its tokens."""

    id: uuid.UUID
    provider: str
    external_account_id: str
    handle: str | None
    display_name: str | None
    status: IntegrationStatus
    scopes: list[str]
    token_expires_at: datetime | None
    refresh_expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(
        cls, integration: Integration, view: accounts.IntegrationView | None = None
    ) -> IntegrationOut:
        return cls(
            id=integration.id,
            provider=integration.provider,
            external_account_id=integration.external_account_id,
            handle=integration.handle,
            display_name=integration.display_name,
            status=integration.status,
            scopes=[str(s) for s in integration.scopes or ()],
            token_expires_at=integration.token_expires_at,
            refresh_expires_at=integration.refresh_expires_at,
            last_refreshed_at=integration.last_refreshed_at,
            last_error_code=view.last_error_code if view else None,
            last_error_message=view.last_error_message if view else None,
            last_error_at=view.last_error_at if view else None,
            created_at=integration.created_at,
            updated_at=integration.updated_at,
        )


class IntegrationList(BaseModel):
    items: list[IntegrationOut]


class Connected(BaseModel):
    integration: IntegrationOut
    reconnected: bool = Field(description="The account was connected before (same integration)")


class Disconnected(BaseModel):
    integration: IntegrationOut
    revocation: Literal["revoked", "unsupported", "failed", "nothing_to_revoke"] = Field(
        description="What happened at the network"
    )


class BlueskyCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identifier: Annotated[TrimmedText, Field(max_length=253)] = Field(
        description="Handle (alice.bsky.social) or DID"
    )
    app_password: SecretStr = Field(
        min_length=1, max_length=100, description="An app password (Settings → App passwords)"
    )


class TelegramCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot_token: SecretStr = Field(
        min_length=1, max_length=200, description="From BotFather: <bot id>:<secret>"
    )
    chat_id: Annotated[
        str, StringConstraints(pattern=r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
    ] = Field(description="A numeric chat id or @channelusername")


class DiscordWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: SecretStr = Field(
        min_length=1,
        max_length=500,
        description="https://discord.com/api/webhooks/<id>/<token> (Channel settings → "
        "Integrations → Webhooks → Copy Webhook URL)",
    )


def _keys(request: Request) -> KeyRing:
    return KeyRing.from_settings(settings_of(request))


def caller_manager(caller: CurrentCaller) -> Manager:
    return Manager(caller.actor, caller.principal.identity.subject)


WorkspaceManager = Annotated[Manager, Depends(caller_manager)]

Code = Annotated[
    str, Query(min_length=1, max_length=2048, description="From the network's redirect")
]
State = Annotated[
    str,
    Query(
        min_length=16,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="From the network's redirect, exactly as received",
    ),
]


@router.get("/oauth/{provider}/authorize", responses=REFUSALS | {503: EXCHANGE[503]})
def authorize(
    provider: OAuthProvider,
    workspace_id: Annotated[uuid.UUID, Query(description="The workspace to connect into")],
    manager: CurrentManager,
    request: Request,
) -> OAuthStart:
    """Start connecting an account: the network's authorize URL with a single-use state (ten
    minutes), PKCE where the network takes it, least-privilege scopes (owners and admins)."""
    started = oauth.begin(settings_of(request), _keys(request), manager, workspace_id, provider)
    return OAuthStart(
        url=started.url,
        provider=provider,
        redirect_uri=started.redirect_uri,
        scopes=list(started.scopes),
        pkce=started.pkce,
        expires_at=started.expires_at,
    )


@router.get("/oauth/{provider}/callback", responses=EXCHANGE)
def callback(
    *,
    provider: OAuthProvider,
    code: Code,
    state: State,
    manager: CurrentManager,
    request: Request,
    workspace_id: Annotated[
        uuid.UUID | None, Query(description="If given, must be the workspace the flow began in")
    ] = None,
) -> Connected:
    """Finish connecting: called by the host application with the user's JWT and the code
    and state the network redirected the user back with."""
    integration, existed = oauth.finish(
        settings_of(request),
        _keys(request),
        manager,
        provider,
        code=code,
        state=state,
        workspace_id=workspace_id,
    )
    return Connected(integration=IntegrationOut.of(integration), reconnected=existed)


@router.get("/integrations")
def list_integrations(
    caller: CurrentCaller,
    manager: WorkspaceManager,
    provider: Provider | None = None,
    status: IntegrationStatus | None = None,
) -> IntegrationList:
    """The workspace's connected accounts: status, expiry, last refresh, last error."""
    with management_session(caller.workspace_id) as session:
        views = accounts.list_integrations(
            session, manager, caller.workspace_id, provider=provider, status=status
        )
        return IntegrationList(items=[IntegrationOut.of(v.integration, v) for v in views])


def _connect(
    request: Request,
    response: Response,
    caller: Caller,
    manager: Manager,
    *,
    provider: str,
    credentials: dict[str, str],
) -> Connected:
    integration, existed = accounts.connect_with_credentials(
        settings_of(request),
        _keys(request),
        manager,
        caller.workspace_id,
        provider=provider,
        credentials=credentials,
    )
    if existed:
        response.status_code = 200
    return Connected(integration=IntegrationOut.of(integration), reconnected=existed)


CONNECT_RESPONSES = REFUSALS | {
    200: {"model": Connected, "description": "The account was connected before: updated"},
    400: {"model": ErrorEnvelope, "description": "The network refused the credentials"},
    502: EXCHANGE[502],
}


@router.post("/integrations/bluesky/connect", status_code=201, responses=CONNECT_RESPONSES)
def connect_bluesky(
    body: BlueskyCredentials,
    caller: CurrentCaller,
    manager: WorkspaceManager,
    request: Request,
    response: Response,
) -> Connected:
    """Connect a Bluesky account with an app password, checked with Bluesky first
    (``createSession``); Herald keeps the session, not the password."""
    credentials = {
        "identifier": body.identifier,
        "app_password": body.app_password.get_secret_value(),
    }
    return _connect(request, response, caller, manager, provider="bluesky", credentials=credentials)


@router.post("/integrations/telegram/connect", status_code=201, responses=CONNECT_RESPONSES)
def connect_telegram(
    body: TelegramCredentials,
    caller: CurrentCaller,
    manager: WorkspaceManager,
    request: Request,
    response: Response,
) -> Connected:
    """Connect a Telegram chat through a bot: the token is checked (``getMe``) and the bot
    must see the chat (``getChat``) before anything is stored."""
    credentials = {"bot_token": body.bot_token.get_secret_value(), "chat_id": body.chat_id}
    return _connect(
        request, response, caller, manager, provider="telegram", credentials=credentials
    )


@router.post("/integrations/discord/connect", status_code=201, responses=CONNECT_RESPONSES)
def connect_discord(
    body: DiscordWebhook,
    caller: CurrentCaller,
    manager: WorkspaceManager,
    request: Request,
    response: Response,
) -> Connected:
    """Connect a Discord channel by its incoming webhook URL, checked with Discord first. Only
    the webhook's id and token are used; Herald calls Discord's API, not the URL's host."""
    credentials = {"webhook_url": body.webhook_url.get_secret_value()}
    return _connect(request, response, caller, manager, provider="discord", credentials=credentials)


@router.delete("/integrations/{integration_id}", responses=REFUSALS)
def disconnect(
    integration_id: uuid.UUID, caller: CurrentCaller, manager: WorkspaceManager, request: Request
) -> Disconnected:
    """Disconnect: revoke at the network where it can, forget the tokens, audit. Its posts
    wait until the account is connected again."""
    try:
        integration, revocation = accounts.disconnect(
            settings_of(request), _keys(request), manager, caller.workspace_id, integration_id
        )
    except Refused as exc:
        if exc.code == "integration_not_found":
            report_if_foreign(caller, Integration, integration_id)
        raise
    return Disconnected(
        integration=IntegrationOut.of(integration),
        revocation=revocation,
    )
