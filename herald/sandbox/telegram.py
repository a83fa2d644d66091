"""Telegram Bot API emulation: ``/bot<token>/<method>`` with JSON, form or query parameters.

Every answer is ``{"ok": …}``; errors are ``{"ok":false,"error_code","description",
"parameters"?}`` with the HTTP status equal to ``error_code``, and a 429 carries
``parameters.retry_after`` and no rate-limit headers, as Telegram does.

A sandbox account is a bot. Its ``settings`` may describe chats:
``{"chats": [{"id": -1001234, "type": "channel", "username": "news"}], "blocked": [42],
"migrated": {"-100": -1009999}}``. Without ``chats`` every chat id is accepted: positive ids
are private chats, ``-100…`` channels, other negatives groups, ``@name`` public channels.
"""

from __future__ import annotations

import json
import re
from math import ceil
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from herald.sandbox.core import (
    NetworkError,
    Sandbox,
    SandboxAccount,
    SandboxNetwork,
    TokenStatus,
    read_form,
    read_json,
    request_auth,
)
from herald.sandbox.counting import utf16_units
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_file, read_multipart

_TOKEN_IN_PATH = re.compile(r"/bot([^/]+)/")
_MEDIA = {"sendPhoto": "photo", "sendVideo": "video", "sendAnimation": "animation"}


async def read_params(request: Request) -> dict[str, Any]:
    """Query parameters overlaid with a JSON or form body, as the Bot API accepts them."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        params.update(await read_json(request))
    elif "multipart" in content_type:
        fields, files = await read_multipart(request)
        params.update(fields)
        params["_files"] = files
    elif "form" in content_type:
        params.update(await read_form(request))
    return params


class TelegramNetwork(SandboxNetwork):
    name = "telegram"
    access_ttl_s = None  # bot tokens never expire
    issues_refresh = False
    default_rate_limit = RateLimit(limit=30, window_s=1)
    default_options: ClassVar[dict[str, Any]] = {
        "max_text_length": 4096,  # ⚠ counted in UTF-16 code units
        "max_caption_length": 1024,
        "photo_max_bytes": 10_000_000,  # uploads: photos 10 MB, other files 50 MB
        "file_max_bytes": 50_000_000,
    }

    def new_account_id(self, seq: int) -> str:
        return str(7_000_000_000 + seq)

    def account_id_problem(self, account_id: str) -> str | None:
        # The account is the bot (its messages' "from"); a chat such as "@news" is not one.
        return None if account_id.isdigit() else "a Telegram bot's id is a number"

    def credential(self, request: Request) -> str | None:
        match = _TOKEN_IN_PATH.search(request.url.path + "/")
        return match.group(1) if match else None

    def error_response(self, err: NetworkError) -> Response:
        description = err.message
        if err.status == 400 and not description.startswith("Bad Request"):
            description = f"Bad Request: {description}"
        elif err.status == 403 and not description.startswith("Forbidden"):
            description = f"Forbidden: {description}"
        body: dict[str, Any] = {"ok": False, "error_code": err.status, "description": description}
        if err.extra.get("parameters"):
            body["parameters"] = err.extra["parameters"]
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limited_response(self, window: RateWindow) -> Response:
        retry_after = max(1, ceil(window.window_s))
        return self.error_response(
            NetworkError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                extra={"parameters": {"retry_after": retry_after}},
            )
        )

    def routes(self, sb: Sandbox) -> APIRouter:  # noqa: PLR0915 - one closure per endpoint
        router = APIRouter()
        net = self.name

        def bot(request: Request) -> SandboxAccount:
            auth = request_auth(request)
            if auth.status is not TokenStatus.VALID or auth.account is None:
                raise NetworkError(401, "Unauthorized")
            return auth.account

        def chat_for(account: SandboxAccount, raw: Any) -> dict[str, Any]:
            chat_id = str(raw if raw is not None else "").strip()
            if not chat_id:
                raise NetworkError(400, "chat_id is empty")
            migrated = account.settings.get("migrated") or {}
            if chat_id in migrated:
                raise NetworkError(
                    400,
                    "group chat was upgraded to a supergroup chat",
                    extra={"parameters": {"migrate_to_chat_id": int(migrated[chat_id])}},
                )
            if chat_id in {str(b) for b in account.settings.get("blocked") or []}:
                raise NetworkError(403, "bot was blocked by the user")
            known = account.settings.get("chats")
            if known is not None:
                for chat in known:
                    if str(chat.get("id")) == chat_id or f"@{chat.get('username')}" == chat_id:
                        return dict(chat)
                raise NetworkError(400, "chat not found")
            if chat_id.startswith("@"):
                return {
                    "id": -1_000_000_000_000 - len(chat_id),
                    "type": "channel",
                    "username": chat_id[1:],
                }
            if not re.fullmatch(r"-?\d+", chat_id):
                raise NetworkError(400, "chat not found")
            number = int(chat_id)
            kind = (
                "private" if number > 0 else ("channel" if chat_id.startswith("-100") else "group")
            )
            return {"id": number, "type": kind}

        async def stored(
            account: SandboxAccount, params: dict[str, Any], field: str, value: Any
        ) -> SandboxUpload | None:
            """The upload an ``attach://name`` or a multipart field carries (None for a URL
            or a file_id), counted against the network's limits."""
            files = params.get("_files") or {}
            name = value[len("attach://") :] if str(value).startswith("attach://") else field
            file = files.get(name)
            if file is None:
                if str(value).startswith("attach://"):
                    raise NetworkError(400, f"wrong remote file identifier: {value}")
                return None
            kind = {"photo": "image", "animation": "gif"}.get(field, "video")
            upload = sb.new_upload(net, account.account_id, kind)
            await absorb_file(file, upload)
            limit = int(sb.option(net, "photo_max_bytes" if kind == "image" else "file_max_bytes"))
            if upload.received > limit:
                del sb.uploads[upload.id]
                raise NetworkError(413, "Request Entity Too Large")
            upload.finish(0, False)
            return upload

        async def send_group(request: Request) -> dict[str, Any]:
            account = bot(request)
            params = await read_params(request)
            chat = chat_for(account, params.get("chat_id"))
            try:
                items = json.loads(params.get("media") or "")
            except ValueError:
                raise NetworkError(400, "can't parse media JSON object") from None
            if not isinstance(items, list) or not 2 <= len(items) <= 10:
                raise NetworkError(400, "media group must include 2-10 items")
            uploads, messages = [], []
            caption = ""
            for item in items:
                kind = item.get("type") if isinstance(item, dict) else None
                if kind not in ("photo", "video"):
                    raise NetworkError(400, "wrong type of the media in the group")
                upload = await stored(account, params, kind, item.get("media"))
                if upload is not None:
                    upload.alt = None
                    uploads.append(upload)
                caption = caption or str(item.get("caption") or "")
            if utf16_units(caption) > int(sb.option(net, "max_caption_length")):
                raise NetworkError(400, "message caption is too long")
            group = str(sb.next_id())
            for n, item in enumerate(items):
                post, _ = sb.create_post(
                    net,
                    account.account_id,
                    caption if n == 0 else "",
                    post_id=str(sb.next_id()),
                    data={"chat": chat, "method": "sendMediaGroup", "media_group_id": group},
                )
                if n == 0 and uploads:
                    sb.attach(uploads, post)
                messages.append(
                    {
                        "message_id": int(post.id),
                        "date": int(post.created_at.timestamp()),
                        "chat": chat,
                        "media_group_id": group,
                        item["type"]: [{"file_id": "x"}],
                    }
                )
            return {"ok": True, "result": messages}

        async def send(request: Request, method: str) -> dict[str, Any]:
            account = bot(request)
            params = await read_params(request)
            chat = chat_for(account, params.get("chat_id"))
            upload = None
            media_field = _MEDIA.get(method)
            if media_field is None:
                text = params.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise NetworkError(400, "message text is empty")
                if utf16_units(text) > int(sb.option(net, "max_text_length")):
                    raise NetworkError(400, "message is too long")
            else:
                upload = await stored(account, params, media_field, params.get(media_field))
                if not params.get(media_field) and upload is None:
                    raise NetworkError(400, f"there is no {media_field} in the request")
                text = str(params.get("caption") or "")
                if utf16_units(text) > int(sb.option(net, "max_caption_length")):
                    raise NetworkError(400, "message caption is too long")
            post, _ = sb.create_post(
                net,
                account.account_id,
                text,
                post_id=str(sb.next_id()),
                data={"chat": chat, "method": method},
            )
            if chat.get("username"):
                post.url = f"https://t.me/{chat['username']}/{post.id}"
            if upload is not None:
                sb.attach([upload], post)
            message: dict[str, Any] = {
                "message_id": int(post.id),
                "date": int(post.created_at.timestamp()),
                "chat": chat,
                "from": {"id": int(account.account_id), "is_bot": True, "username": account.handle},
            }
            if media_field is None:
                message["text"] = text
            else:
                message[media_field] = [{"file_id": f"sandbox-{post.id}"}]
                if text:
                    message["caption"] = text
            return {"ok": True, "result": message}

        @router.api_route("/bot{token}/getMe", methods=["GET", "POST"])
        async def get_me(request: Request, token: str) -> dict[str, Any]:
            account = bot(request)
            return {
                "ok": True,
                "result": {
                    "id": int(account.account_id),
                    "is_bot": True,
                    "first_name": account.handle,
                    "username": account.handle,
                },
            }

        @router.api_route("/bot{token}/getChat", methods=["GET", "POST"])
        async def get_chat(request: Request, token: str) -> dict[str, Any]:
            account = bot(request)
            params = await read_params(request)
            return {"ok": True, "result": chat_for(account, params.get("chat_id"))}

        @router.api_route("/bot{token}/{method}", methods=["GET", "POST"])
        async def dispatch(request: Request, token: str, method: str) -> dict[str, Any]:
            if method == "sendMediaGroup":
                return await send_group(request)
            if method != "sendMessage" and method not in _MEDIA:
                raise NetworkError(404, "Not Found")
            return await send(request, method)

        return router
