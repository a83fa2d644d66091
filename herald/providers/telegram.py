"""Telegram Bot API adapter.

The connection is a bot token (``TokenSet.access_token``) and a chat (``Account.external_id``:
a numeric chat id or ``@channelusername``). The token travels in the URL path
(``/bot<token>/sendMessage``); :func:`herald.redaction.redact_url` keeps it out of logs
and nothing here puts a URL into a message.

Telegram has no OAuth, no token expiry and no way to read messages back: ``refresh`` raises
:class:`ReauthRequired`, ``find_post`` answers Unknown, and a publish whose answer was lost is
ambiguous for good (``needs_review``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthorizeRequest,
    ContentInvalid,
    Idempotency,
    Lookup,
    PermanentError,
    PostDraft,
    PostMetrics,
    ProviderError,
    PublishResult,
    RateLimited,
    ReauthRequired,
    TokenSet,
    Unknown,
    quoted,
)
from herald.providers.http import ProviderHTTP, json_body, server_error
from herald.providers.media import MB, MediaLimits, check_kinds, refuse
from herald.providers.text import utf16_length
from herald.settings import Settings

NAME = "telegram"
MAX_TEXT = 4096
MAX_CAPTION = 1024
PARSE_MODES = frozenset({"HTML", "MarkdownV2"})
# Telegram's 429 always carries retry_after; this covers a body that lost it.
DEFAULT_RETRY_AFTER_S = 30
MAX_GROUP = 10
#: Bot API uploads: photos up to 10 MB, other files up to 50 MB.
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="Telegram",
    max_bytes={"image": 10 * MB, "gif": 50 * MB, "video": 50 * MB},
)
_SEND_METHOD = {"image": "sendPhoto", "gif": "sendAnimation", "video": "sendVideo"}
_MEDIA_FIELD = {"image": "photo", "gif": "animation", "video": "video"}
_NUMERIC_CHAT = re.compile(r"-?\d{1,20}")


def classify(response: httpx.Response, *, now: datetime | None = None) -> ProviderError:
    """Translate a failed Bot API answer into exactly one taxonomy error.

    The body is ``{"ok":false,"error_code","description","parameters"?}``; anything else
    (garbage, HTML from a proxy, a truncated body) is classified by the HTTP status alone.
    """
    now = now or datetime.now(UTC)
    body = json_body(response)
    body = body if isinstance(body, dict) else {}
    status = response.status_code
    description = body.get("description")
    message = description if isinstance(description, str) and description else f"HTTP {status}"
    message = quoted(message)
    params = body.get("parameters")
    params = params if isinstance(params, dict) else {}
    code = body.get("error_code")
    provider_code = str(code) if isinstance(code, int) and not isinstance(code, bool) else None
    kw: dict[str, Any] = {"provider": NAME, "http_status": status, "provider_code": provider_code}

    if status == 429:
        retry_after = params.get("retry_after")
        seconds = (
            float(retry_after)
            if isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
            else DEFAULT_RETRY_AFTER_S
        )
        seconds = min(max(seconds, 0.0), 86_400.0)
        return RateLimited(message, reset_at=now + timedelta(seconds=seconds), **kw)
    if status in (401, 404):
        # 401: the token was revoked or is wrong; 404: the token is malformed. A bot token
        # cannot be refreshed, only replaced by the user.
        return ReauthRequired(f"bot token refused: {message}", **kw)
    if status >= 500:
        return server_error(NAME, response, idempotent=False, message=message)
    migrate_to = params.get("migrate_to_chat_id")
    if isinstance(migrate_to, int) and not isinstance(migrate_to, bool):
        return PermanentError(f"{message} (the group is now chat {migrate_to})", **kw)
    return PermanentError(message, **kw)


def public_url(chat: Any, message_id: int) -> str | None:
    """``t.me`` link for a message: by username when public, ``/c/`` for private
    supergroups and channels, None for private chats and basic groups."""
    if not isinstance(chat, dict):
        return None
    username = chat.get("username")
    if isinstance(username, str) and username:
        return f"https://t.me/{username}/{message_id}"
    chat_id = chat.get("id")
    if chat.get("type") in ("supergroup", "channel") and isinstance(chat_id, int):
        digits = str(chat_id)
        if digits.startswith("-100"):
            return f"https://t.me/c/{digits[4:]}/{message_id}"
    return None


def _chat_id(account: Account) -> int | str:
    raw = account.external_id.strip()
    return int(raw) if _NUMERIC_CHAT.fullmatch(raw) else raw


class TelegramProvider:
    """Posts to one chat through the Bot API."""

    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "none"
    refreshes_tokens: ClassVar[bool] = False
    # Tokens never expire: nothing to refresh.
    refresh_client_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self._http = ProviderHTTP(
            NAME, settings.provider_base_url(NAME), settings, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ validation

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def validate(self, draft: PostDraft, account: Account) -> None:
        chat = account.external_id.strip()
        if not chat or not (_NUMERIC_CHAT.fullmatch(chat) or chat.startswith("@")):
            raise ContentInvalid(
                "the connection has no chat id or @channel", rule="telegram.chat_id", provider=NAME
            )
        parse_mode = draft.settings.get("parse_mode")
        if parse_mode is not None and parse_mode not in PARSE_MODES:
            raise ContentInvalid(
                f"parse_mode must be one of {sorted(PARSE_MODES)}",
                rule="telegram.parse_mode",
                provider=NAME,
            )
        check_kinds(MEDIA_LIMITS, draft)
        if len(draft.media) > MAX_GROUP:
            raise refuse(MEDIA_LIMITS, "max_media", f"a media group holds 2 to {MAX_GROUP} items")
        if len(draft.media) > 1 and any(m.kind == "gif" for m in draft.media):
            raise refuse(MEDIA_LIMITS, "media_group_kind", "a media group holds photos and videos")
        # The limits apply after entity parsing; counting the raw text is the safe side.
        length = utf16_length(draft.text)
        if draft.media:
            if length > MAX_CAPTION:
                raise ContentInvalid(
                    f"caption is {length} UTF-16 units; Telegram allows {MAX_CAPTION}",
                    rule="telegram.max_caption_length",
                    provider=NAME,
                )
            return
        if not draft.text.strip():
            raise ContentInvalid("message text is empty", rule="telegram.empty", provider=NAME)
        if length > MAX_TEXT:
            raise ContentInvalid(
                f"message is {length} UTF-16 units; Telegram allows {MAX_TEXT}",
                rule="telegram.max_length",
                provider=NAME,
            )

    # ------------------------------------------------------------------ publishing

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        payload: dict[str, Any] = {"chat_id": _chat_id(account)}
        if draft.settings.get("parse_mode") is not None:
            payload["parse_mode"] = draft.settings["parse_mode"]
        if draft.settings.get("disable_notification"):
            payload["disable_notification"] = True
        if draft.media:
            # The file is sent with the message (multipart): the upload is the publish, so
            # there is nothing to record and reuse.
            return self._send_media(draft, payload, tokens)
        payload["text"] = draft.text
        if draft.settings.get("disable_link_preview"):
            payload["link_preview_options"] = {"is_disabled": True}
        response = self._http.request("POST", self._path(tokens, "sendMessage"), json=payload)
        return self._sent(response)

    def _send_media(
        self, draft: PostDraft, payload: dict[str, Any], tokens: TokenSet
    ) -> PublishResult:
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in payload.items()}
        files = [media.local(NAME) for media in draft.media]
        handles = [open(file.path, "rb") for file in files]  # noqa: SIM115 - closed below
        try:
            if len(files) == 1:
                media = draft.media[0]
                method, field = _SEND_METHOD[media.kind], _MEDIA_FIELD[media.kind]
                if draft.text:
                    form["caption"] = draft.text
                parts = {field: (files[0].filename, handles[0], files[0].mime)}
            else:
                method = "sendMediaGroup"
                group = []
                for n, media in enumerate(draft.media):
                    item = {"type": _MEDIA_FIELD[media.kind], "media": f"attach://file{n}"}
                    if n == 0 and draft.text:
                        item |= {"caption": draft.text}
                        if "parse_mode" in form:
                            item["parse_mode"] = form.pop("parse_mode")
                    group.append(item)
                form["media"] = json.dumps(group)
                parts = {
                    f"file{n}": (f.filename, h, f.mime)
                    for n, (f, h) in enumerate(zip(files, handles, strict=True))
                }
            response = self._http.request(
                "POST", self._path(tokens, method), data=form, files=parts
            )
        finally:
            for handle in handles:
                handle.close()
        return self._sent(response)

    def _sent(self, response: httpx.Response) -> PublishResult:
        if not response.is_success:
            raise classify(response)
        body = json_body(response)
        result = body.get("result") if isinstance(body, dict) else None
        if isinstance(result, list) and result:
            result = result[0]  # a media group: its first message stands for the post
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            # A 2xx means Telegram took the message; without its id we cannot say which.
            raise AmbiguousOutcome(
                "Telegram accepted the request but the answer had no message_id",
                provider=NAME,
                http_status=response.status_code,
            )
        assert isinstance(result, dict)
        return PublishResult(
            external_id=str(message_id), url=public_url(result.get("chat"), message_id)
        )

    def _path(self, tokens: TokenSet, method: str) -> str:
        token = tokens.access_token.strip()
        if not token or "/" in token or "?" in token:
            raise ReauthRequired("the stored bot token is not a token", provider=NAME)
        return f"/bot{token}/{method}"

    def verify(self, bot_token: str, chat_id: str) -> tuple[TokenSet, Account]:
        """Check a bot token (``getMe``) and that the bot can see the chat (``getChat``)
        before connecting: the connection's tokens and account."""
        tokens = TokenSet(access_token=bot_token.strip())
        me = self._result(self._http.request("GET", self._path(tokens, "getMe"), idempotent=True))
        chat = self._result(
            self._http.request(
                "GET", self._path(tokens, "getChat"), params={"chat_id": chat_id}, idempotent=True
            )
        )
        handle = chat.get("username") or chat.get("title")
        return tokens, Account(
            external_id=str(chat.get("id", chat_id)),
            handle=str(handle) if handle else None,
            settings={"bot_username": me.get("username"), "chat_type": chat.get("type")},
        )

    @staticmethod
    def _result(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise classify(response)
        body = json_body(response)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise PermanentError("unreadable answer from Telegram", provider=NAME)
        return result

    # ------------------------------------------------------------------ tokens

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        raise ReauthRequired(
            "Telegram bot tokens never expire and cannot be refreshed; issue a new token "
            "with BotFather and reconnect",
            provider=NAME,
        )

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        raise PermanentError(
            "Telegram has no OAuth: connect by pasting a BotFather token and a chat id",
            provider=NAME,
        )

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        raise PermanentError(
            "Telegram has no OAuth: connect by pasting a BotFather token and a chat id",
            provider=NAME,
        )

    # ------------------------------------------------------------------ reading back

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        """The Bot API cannot read a chat's history: nothing can be reconciled."""
        return Unknown("the Telegram Bot API cannot read a chat back")

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        """The Bot API has no per-message statistics; the figures are unknown, not zero."""
        return PostMetrics(impressions=None, raw={"available": False})
