"""Discord adapter: incoming webhooks, or a bot posting into a channel.

``Account.settings["mode"]`` picks the path:

``webhook`` (default)  ``external_id`` is the webhook id; ``TokenSet.access_token`` is the
                       webhook token (it travels in the URL path, which
                       :func:`herald.redaction.redact_url` hides). The connection comes
                       from OAuth's ``webhook.incoming`` scope, whose grant rotates a
                       single-use refresh token; ``refresh`` keeps that grant alive and keeps
                       the webhook token. Publishing sends ``?wait=true`` to get the message.
``bot``                ``settings["channel_id"]`` (or ``external_id``) is the channel;
                       ``access_token`` is the bot token, which never expires. Each message
                       carries ``nonce`` + ``enforce_nonce`` derived from the idempotency key,
                       so Discord answers a repeat with the message it already created.

``settings["guild_id"]`` makes public URLs; ``settings["thread_id"]`` posts into a thread.

Reconciliation: a bot reads the channel's history (``GET /channels/{id}/messages``, 100 per
page, older pages by ``before=<oldest id>``) back to the attempt's start. A webhook cannot
list messages, so a webhook post's absence can never be proven.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import httpx

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthorizeRequest,
    ConfigurationError,
    ContentInvalid,
    Found,
    Idempotency,
    Lookup,
    PermanentError,
    PostDraft,
    PostMetrics,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    RemotePost,
    TokenSet,
    TransientError,
    Unknown,
    quoted,
)
from herald.providers.http import ProviderHTTP, client_refused, json_body, server_error
from herald.providers.lookup import Page, Seen, search_window
from herald.providers.media import MediaLimits, MiB, check_kinds, refuse
from herald.providers.oauth2 import token_expiry
from herald.settings import Settings

NAME = "discord"
MAX_ATTACHMENTS = 10
#: Uploads up to 10 MiB a file without a server boost; ``description`` (alt) 1,024.
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="Discord",
    max_bytes={"image": 10 * MiB, "gif": 10 * MiB, "video": 10 * MiB},
    alt_max=1024,
)
MAX_CONTENT = 2000
NONCE_LENGTH = 25
USER_AGENT = "DiscordBot (https://github.com/herald-social/herald, 0.1)"
AUTHORIZE_URL = "https://discord.com/oauth2/authorize"
DEFAULT_RETRY_AFTER_S = 5.0
HISTORY_PAGE = 100  # the most ``limit`` allows
Mode = Literal["webhook", "bot"]
_WEBHOOK_URL = re.compile(r"/webhooks/(\d{1,30})/([A-Za-z0-9_-]{1,200})/?$")


def nonce_for(idempotency_key: str) -> str:
    """A stable nonce of at most 25 characters for one post's idempotency key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:NONCE_LENGTH]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _retry_after(body: dict[str, Any], headers: httpx.Headers) -> float:
    for candidate in (
        body.get("retry_after"),
        headers.get("retry-after"),
        headers.get("x-ratelimit-reset-after"),
    ):
        seconds = _number(candidate)
        if seconds is not None and math.isfinite(seconds):
            return min(max(seconds, 0.0), 86_400.0)
    return DEFAULT_RETRY_AFTER_S


def form_errors(errors: Any, path: str = "") -> Iterator[str]:
    """Flatten 50035's nested ``errors`` into ``field.path: message`` lines."""
    if not isinstance(errors, dict):
        return
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("message"), str):
                    yield f"{path or 'body'}: {item['message']}"
        elif isinstance(value, dict):
            yield from form_errors(value, f"{path}.{key}" if path else str(key))


def classify(
    response: httpx.Response, *, mode: Mode = "webhook", now: datetime | None = None
) -> ProviderError:
    """Translate a failed Discord answer (``{code, message, errors?}``) into one error."""
    now = now or datetime.now(UTC)
    status = response.status_code
    body = json_body(response)
    body = body if isinstance(body, dict) else {}
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    raw_message = body.get("message")
    message = raw_message if isinstance(raw_message, str) and raw_message else f"HTTP {status}"
    details = list(form_errors(body.get("errors")))
    if details:
        message = f"{message}: {'; '.join(details)}"
    message = quoted(message)
    kw: dict[str, Any] = {
        "provider": NAME,
        "http_status": status,
        "provider_code": str(code) if code is not None else None,
    }
    if status == 429:
        reset_at = now + timedelta(seconds=_retry_after(body, response.headers))
        return RateLimited(message, reset_at=reset_at, **kw)
    if status == 401:
        what = "webhook token" if mode == "webhook" else "bot token"
        return ReauthRequired(f"the {what} was refused: {message}", **kw)
    if status == 404 and code == 10015:
        return ReauthRequired(f"the webhook no longer exists: {message}", **kw)
    if status >= 500:
        return server_error(NAME, response, idempotent=mode == "bot", message=message)
    return PermanentError(message, **kw)


def classify_token_error(response: httpx.Response) -> ProviderError:
    """The OAuth token endpoint: a dead or reused refresh token means reconnecting."""
    body = json_body(response)
    body = body if isinstance(body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), str) else None
    status = response.status_code
    if status == 400 and error == "invalid_grant":
        return ReauthRequired(
            "Discord refused the refresh token (revoked, or already used)",
            provider=NAME,
            http_status=status,
            provider_code=error,
        )
    if client_refused(status, error):
        return ConfigurationError(
            "Discord refused Herald's OAuth client credentials",
            provider=NAME,
            http_status=status,
            provider_code=error,
        )
    return classify(response)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class DiscordProvider:
    name: ClassVar[str] = NAME
    # Bot messages always carry a nonce, so a bot repeat inside Discord's window is harmless
    # (and publish repeats it itself when an answer is lost). The class cannot promise that
    # for webhook connections, which have no nonce: so "none".
    idempotency: ClassVar[Idempotency] = "none"
    refreshes_tokens: ClassVar[bool] = True
    refresh_client_fields: ClassVar[tuple[str, ...]] = ("client_id", "client_secret")

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = settings.provider_base_url(NAME)
        sandboxed = settings.sandbox_url is not None
        self._authorize_url = f"{self._base}/oauth2/authorize" if sandboxed else AUTHORIZE_URL
        self._client_id = client_id
        self._client_secret = client_secret
        self._max_pages = settings.reconcile_max_pages
        self._http = ProviderHTTP(NAME, self._base, settings, transport=transport)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def mode(account: Account) -> Mode:
        return "bot" if account.settings.get("mode") == "bot" else "webhook"

    @staticmethod
    def _channel(account: Account) -> str:
        return str(account.settings.get("channel_id") or account.external_id)

    def verify_webhook(self, webhook_url: str) -> tuple[TokenSet, Account]:
        """Check an incoming webhook's URL (``GET /webhooks/{id}/{token}``) before connecting.
        Only its id and token are taken from the URL: the call goes to Discord's base URL,
        never to the host the URL names."""
        found = _WEBHOOK_URL.search(webhook_url.strip())
        if found is None:
            raise PermanentError("not a Discord webhook URL", provider=NAME, http_status=400)
        webhook_id, token = found.groups()
        tokens = TokenSet(access_token=token)
        account = Account(external_id=webhook_id)
        response = self._http.request(
            "GET",
            self._webhook_path(account, tokens),
            headers={"User-Agent": USER_AGENT},
            idempotent=True,
        )
        if response.status_code != 200:
            raise classify(response)
        body = json_body(response)
        if not isinstance(body, dict):
            raise PermanentError("unreadable answer from Discord", provider=NAME)
        settings = {k: str(body[k]) for k in ("channel_id", "guild_id") if body.get(k)}
        name = body.get("name")
        return tokens, Account(
            external_id=webhook_id,
            handle=name if isinstance(name, str) else None,
            settings={"mode": "webhook", **settings},
        )

    def _webhook_path(self, account: Account, tokens: TokenSet) -> str:
        token = tokens.access_token.strip()
        if not token or "/" in token or "?" in token:
            raise ReauthRequired("the stored webhook token is not a token", provider=NAME)
        return f"/webhooks/{account.external_id}/{token}"

    def _headers(self, account: Account, tokens: TokenSet) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.mode(account) == "bot":
            headers["Authorization"] = f"Bot {tokens.access_token}"
        return headers

    def _url_for(self, account: Account, channel_id: Any, message_id: str) -> str | None:
        guild = account.settings.get("guild_id")
        channel = channel_id or account.settings.get("channel_id")
        if not guild or not channel:
            return None
        return f"https://discord.com/channels/{guild}/{channel}/{message_id}"

    # ------------------------------------------------------------------ publishing

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not account.external_id.strip():
            raise ContentInvalid("no webhook or channel id", rule="discord.target", provider=NAME)
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid("message is empty", rule="discord.empty", provider=NAME)
        if len(draft.text) > MAX_CONTENT:
            raise ContentInvalid(
                f"content is {len(draft.text)} characters; Discord allows {MAX_CONTENT}",
                rule="discord.max_length",
                provider=NAME,
            )
        if len(draft.media) > MAX_ATTACHMENTS:
            raise refuse(
                MEDIA_LIMITS,
                "max_media",
                f"at most {MAX_ATTACHMENTS} attachments; got {len(draft.media)}",
            )
        check_kinds(MEDIA_LIMITS, draft)

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        mode = self.mode(account)
        payload: dict[str, Any] = {
            "content": draft.text,
            "allowed_mentions": {"parse": []},
        }
        files = [m.local(NAME) for m in draft.media]
        if files:
            # Multipart: payload_json names each attachment (with its alt text as
            # description); the files follow as files[n]. The upload is the message itself.
            payload["attachments"] = [
                {"id": n, "filename": f.filename}
                | ({"description": m.alt_text} if m.alt_text else {})
                for n, (f, m) in enumerate(zip(files, draft.media, strict=True))
            ]
        params: dict[str, str] = {}
        if mode == "bot":
            path = f"/channels/{self._channel(account)}/messages"
            payload["nonce"] = nonce_for(draft.idempotency_key)
            payload["enforce_nonce"] = True
        else:
            path = self._webhook_path(account, tokens)
            params["wait"] = "true"
            thread_id = account.settings.get("thread_id") or draft.settings.get("thread_id")
            if thread_id:
                params["thread_id"] = str(thread_id)
        handles = [open(f.path, "rb") for f in files]  # noqa: SIM115 - closed below
        body: dict[str, Any] = {"json": payload}
        if files:
            body = {
                "data": {"payload_json": json.dumps(payload)},
                "files": [
                    (f"files[{n}]", (f.filename, h, f.mime))
                    for n, (f, h) in enumerate(zip(files, handles, strict=True))
                ],
            }
        try:
            response = self._http.request(
                "POST",
                path,
                params=params,
                headers=self._headers(account, tokens),
                idempotent=mode == "bot",
                **body,
            )
        finally:
            for handle in handles:
                handle.close()
        if not response.is_success:
            raise classify(response, mode=mode)
        body = json_body(response)
        message_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(message_id, str | int) or isinstance(message_id, bool):
            raise AmbiguousOutcome(
                "Discord accepted the message but returned no message id",
                provider=NAME,
                http_status=response.status_code,
            )
        assert isinstance(body, dict)
        external_id = str(message_id)
        return PublishResult(
            external_id, self._url_for(account, body.get("channel_id"), external_id)
        )

    # ------------------------------------------------------------------ tokens

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        response = self._http.request(
            "POST",
            "/oauth2/token",
            data=form,
            auth=(self._client_id, self._client_secret),
            headers={"User-Agent": USER_AGENT},
            idempotent=False,
        )
        if not response.is_success:
            raise classify_token_error(response)
        body = json_body(response)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            # The old refresh token may already be spent; only a reconnect is certain.
            raise AmbiguousOutcome(
                "Discord's token answer was unreadable", provider=NAME, http_status=200
            )
        return body

    @staticmethod
    def _expiry(body: dict[str, Any]) -> datetime | None:
        return token_expiry(body.get("expires_in"))

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        if self.mode(account) == "bot":
            raise ReauthRequired(
                "Discord bot tokens never expire; a refused bot token must be reset in the "
                "developer portal and reconnected",
                provider=NAME,
            )
        if not tokens.refresh_token:
            raise ReauthRequired("this Discord connection has no refresh token", provider=NAME)
        body = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        )
        new_refresh = body.get("refresh_token")
        scope = body.get("scope")
        return TokenSet(
            # The webhook token is the posting secret and survives the grant's refresh.
            access_token=tokens.access_token,
            refresh_token=new_refresh if isinstance(new_refresh, str) else tokens.refresh_token,
            expires_at=self._expiry(body),
            scopes=tuple(scope.split()) if isinstance(scope, str) else tokens.scopes,
        )

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "scope": " ".join(scopes or ("webhook.incoming",)),
                "state": state,
                "redirect_uri": redirect_uri,
                "prompt": "consent",
            }
        )
        return AuthorizeRequest(url=f"{self._authorize_url}?{query}", state=state)

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        body = self._token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        )
        webhook = body.get("webhook")
        if not isinstance(webhook, dict) or not all(
            isinstance(webhook.get(k), str) for k in ("id", "token", "channel_id")
        ):
            raise PermanentError(
                "Discord granted no webhook (the webhook.incoming scope is required)",
                provider=NAME,
            )
        refresh = body.get("refresh_token")
        tokens = TokenSet(
            access_token=webhook["token"],
            refresh_token=refresh if isinstance(refresh, str) else None,
            expires_at=self._expiry(body),
            scopes=tuple(str(body.get("scope", "")).split()),
        )
        settings = {"mode": "webhook", "channel_id": webhook["channel_id"]}
        if isinstance(webhook.get("guild_id"), str):
            settings["guild_id"] = webhook["guild_id"]
        name = webhook.get("name")
        return tokens, Account(
            external_id=webhook["id"],
            handle=name if isinstance(name, str) else None,
            settings=settings,
        )

    # ------------------------------------------------------------------ reading back

    def _get(self, path: str, account: Account, tokens: TokenSet, **params: Any) -> Any:
        response = self._http.request(
            "GET", path, params=params, headers=self._headers(account, tokens)
        )
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise classify(response, mode=self.mode(account))
        return json_body(response)

    def _message(self, message_id: str, account: Account, tokens: TokenSet) -> Any:
        if self.mode(account) == "bot":
            path = f"/channels/{self._channel(account)}/messages/{message_id}"
        else:
            path = f"{self._webhook_path(account, tokens)}/messages/{message_id}"
        return self._get(path, account, tokens)

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        """Bot: the channel's history since ``since``, by nonce or content. Webhook: only a
        known candidate (``draft.settings["message_id"]``) can be found; absence is never
        proven, because a webhook cannot list what it posted."""
        if self.mode(account) == "webhook":
            candidate = draft.settings.get("message_id")
            found = self._message(str(candidate), account, tokens) if candidate else None
            remote = self._remote(found, account) if isinstance(found, dict) else None
            if remote is not None:
                return Found(remote)
            return Unknown("a Discord webhook cannot list the messages it posted")
        nonce = nonce_for(draft.idempotency_key)
        path = f"/channels/{self._channel(account)}/messages"

        def page(before: str | None) -> Page:
            params: dict[str, Any] = {"limit": HISTORY_PAGE}
            if before is not None:
                params["before"] = before
            history = self._get(path, account, tokens, **params)
            if history is None:
                raise PermanentError("Discord does not know the channel", provider=NAME)
            if not isinstance(history, list):
                raise TransientError("unreadable channel history from Discord", provider=NAME)
            items = [i for i in history if isinstance(i, dict)]
            seen = [self._seen(item, account, nonce, draft.text) for item in items]
            oldest = items[-1].get("id") if items else None
            full = len(history) >= HISTORY_PAGE and isinstance(oldest, str | int)
            return Page(seen, str(oldest) if full else None)

        return search_window(page, since=since, max_pages=self._max_pages, network="Discord")

    def _seen(self, item: dict[str, Any], account: Account, nonce: str, text: str) -> Seen:
        created = _parse_time(item.get("timestamp"))
        if item.get("nonce") != nonce and item.get("content") != text:
            return Seen(created)
        return Seen(created, self._remote(item, account))

    def _remote(self, item: dict[str, Any], account: Account) -> RemotePost | None:
        message_id = item.get("id")
        if not isinstance(message_id, str | int):
            return None
        content = item.get("content")
        return RemotePost(
            external_id=str(message_id),
            url=self._url_for(account, item.get("channel_id"), str(message_id)),
            text=content if isinstance(content, str) else "",
            created_at=_parse_time(item.get("timestamp")),
        )

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        message = self._message(external_id, account, tokens)
        if not isinstance(message, dict):
            raise PermanentError(f"message {external_id} not found", provider=NAME)
        reactions = message.get("reactions")
        likes = 0
        for reaction in reactions if isinstance(reactions, list) else []:
            count = reaction.get("count") if isinstance(reaction, dict) else None
            if isinstance(count, int) and not isinstance(count, bool):
                likes += count
        return PostMetrics(likes=likes, impressions=None, raw={"reactions": reactions or []})
