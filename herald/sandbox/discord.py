"""Discord emulation: webhook execution and lookup, bot channel messages with ``nonce`` +
``enforce_nonce`` de-duplication, channel history, and OAuth with the ``webhook.incoming``
scope and single-use rotating refresh tokens.

A sandbox account is either a webhook (``account_id`` = webhook id, ``settings`` with
``channel_id`` and ``guild_id``; its access token is the webhook token) or a bot
(``settings["mode"] = "bot"``; ``settings["channels"]`` lists the channels it may post in,
absent = any). Errors are ``{code, message, errors?}``; 429s carry ``retry_after`` (float
seconds), ``global``, ``Retry-After`` and the ``X-RateLimit-*`` headers.

Channel history pages as Discord documents: ``limit`` 1 to 100 (default 50; anything else is a
400 ``Invalid Form Body``), and one of ``before`` / ``after`` / ``around`` (a message id).
Messages come newest first; a page shorter than ``limit`` is the channel's beginning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from math import ceil
from typing import Any, ClassVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from herald.sandbox.core import (
    NetworkError,
    RefreshRefused,
    Sandbox,
    SandboxAccount,
    SandboxNetwork,
    SandboxPost,
    TokenStatus,
    read_form,
    read_json,
    request_auth,
    token_client,
)
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_file, read_multipart

OAUTH_ACCESS_TTL_S = 604_800
_WEBHOOK_PATH = re.compile(r"/webhooks/[^/]+/([^/?]+)")
_STATUS_CODES = {401: 0, 403: 50013, 404: 0, 413: 40005, 429: 0}


def _form_error(field: str, code: str, message: str) -> NetworkError:
    errors = {field: {"_errors": [{"code": code, "message": message}]}}
    return NetworkError(400, "Invalid Form Body", code="50035", extra={"errors": errors})


def _max_length_error(limit: int) -> NetworkError:
    return _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _store_message(
    sb: Sandbox,
    net: str,
    account: SandboxAccount,
    content: str,
    channel_id: str,
    *,
    webhook: bool = False,
    key: str | None = None,
    key_ttl_s: float = 0.0,
) -> SandboxPost:
    data: dict[str, Any] = {
        "channel_id": channel_id,
        "author": {"id": account.account_id, "username": account.handle, "bot": True},
    }
    if webhook:
        data["webhook_id"] = account.account_id
    post, _ = sb.create_post(
        net,
        account.account_id,
        content,
        post_id=str(1_300_000_000_000_000_000 + sb.next_id()),
        idempotency_key=key,
        key_ttl_s=key_ttl_s,
        data=data,
    )
    return post


class DiscordNetwork(SandboxNetwork):
    name = "discord"
    access_ttl_s = None  # webhook and bot tokens never expire; OAuth tokens get 7 days below
    issues_refresh = True
    rotates_refresh = True
    reuse_revokes_family = True
    default_rate_limit = RateLimit(limit=5, window_s=2)
    default_options: ClassVar[dict[str, Any]] = {
        "max_content_length": 2000,
        "nonce_window_s": 300,  # ⚠ "the past few minutes"
        "attachment_max_bytes": 10 * 1024 * 1024,  # per file, without a server boost
        "max_attachments": 10,
    }

    def new_account_id(self, seq: int) -> str:
        return str(1_200_000_000_000_000_000 + seq)

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        channels = account.settings.get("channels") or [None]
        channel = options.get("channel_id") or account.settings.get("channel_id") or channels[0]
        return _store_message(
            sb, self.name, account, text, str(channel or "0"), webhook=self._is_webhook(account)
        )

    @staticmethod
    def _is_webhook(account: SandboxAccount) -> bool:
        return account.settings.get("mode") != "bot"

    def credential(self, request: Request) -> str | None:
        match = _WEBHOOK_PATH.search(request.url.path)
        if match:
            return match.group(1)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("bot", "bearer"):
            return value.strip() or None
        return None

    def redact(self, path: str) -> str:
        return _WEBHOOK_PATH.sub(lambda m: m.group(0).replace(m.group(1), "***"), path)

    def error_response(self, err: NetworkError) -> Response:
        if err.extra.get("oauth"):
            body: dict[str, Any] = {"error": err.code, "error_description": err.message}
            return JSONResponse(body, err.status, headers=err.headers)
        code = (
            int(err.code) if err.code and err.code.isdigit() else _STATUS_CODES.get(err.status, 0)
        )
        message = err.message if err.code else f"{err.status}: {err.message}"
        body = {"message": message, "code": code, **err.extra}
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining),
            "X-RateLimit-Reset": f"{window.reset_at.timestamp():.3f}",
            "X-RateLimit-Reset-After": f"{float(window.window_s):.3f}",
            "X-RateLimit-Bucket": "sandbox-bucket",
        }

    def rate_limited_response(self, window: RateWindow) -> Response:
        retry_after = float(window.window_s)
        headers = self.rate_limit_headers(window) | {
            "Retry-After": str(ceil(retry_after)),
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Global": "false",
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        return JSONResponse(body, 429, headers=headers)

    def routes(self, sb: Sandbox) -> APIRouter:  # noqa: PLR0915 - one closure per endpoint
        router = APIRouter()
        net = self.name

        def message_view(post: SandboxPost, *, with_nonce: bool = False) -> dict[str, Any]:
            view = {
                "id": post.id,
                "channel_id": post.data["channel_id"],
                "content": post.text,
                "timestamp": post.created_at.isoformat(),
                "author": post.data["author"],
                "embeds": post.data.get("embeds", []),
                "reactions": post.data.get("reactions", []),
                "type": 0,
            }
            if post.data.get("webhook_id"):
                view["webhook_id"] = post.data["webhook_id"]
            if with_nonce and post.idempotency_key:
                view["nonce"] = post.idempotency_key
            return view

        def checked_body(body: dict[str, Any]) -> str:
            content = body.get("content", "")
            if not isinstance(content, str):
                raise _form_error("content", "BASE_TYPE_BAD_STRING", "Must be a string.")
            limit = int(sb.option(net, "max_content_length"))
            if len(content) > limit:
                raise _max_length_error(limit)
            if not content.strip() and not body.get("embeds") and not body.get("attachments"):
                raise NetworkError(400, "Cannot send an empty message", code="50006")
            return content

        def webhook(request: Request, webhook_id: str) -> SandboxAccount:
            account = sb.account(net, webhook_id)
            if account is None or account.settings.get("mode") == "bot":
                raise NetworkError(404, "Unknown Webhook", code="10015")
            auth = request_auth(request)
            if (
                auth.status is not TokenStatus.VALID
                or auth.token is None
                or (auth.token.account_id != account.account_id)
            ):
                raise NetworkError(401, "Invalid Webhook Token", code="50027")
            return account

        def bot(request: Request, channel_id: str) -> SandboxAccount:
            auth = request_auth(request)
            if auth.status is not TokenStatus.VALID or auth.account is None:
                raise NetworkError(401, "Unauthorized")
            channels = auth.account.settings.get("channels")
            if channels is not None and channel_id not in {str(c) for c in channels}:
                raise NetworkError(404, "Unknown Channel", code="10003")
            return auth.account

        @router.get("/webhooks/{webhook_id}/{token}")
        async def get_webhook(request: Request, webhook_id: str, token: str) -> dict[str, Any]:
            account = webhook(request, webhook_id)
            return {
                "id": webhook_id,
                "type": 1,
                "name": account.handle,
                "channel_id": str(account.settings.get("channel_id", "0")),
                "guild_id": str(account.settings.get("guild_id", "0")),
                "application_id": None,
            }

        async def message_body(
            request: Request, account: SandboxAccount
        ) -> tuple[dict[str, Any], list[SandboxUpload]]:
            """A JSON body, or multipart: ``payload_json`` plus ``files[n]`` attachments."""
            if not request.headers.get("content-type", "").startswith("multipart/"):
                return await read_json(request), []
            fields, files = await read_multipart(request)
            try:
                body = json.loads(fields.get("payload_json") or "{}")
            except ValueError:
                raise _form_error("payload_json", "BASE_TYPE_BAD_JSON", "Bad JSON.") from None
            described = {
                str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)
            }
            if len(files) > int(sb.option(net, "max_attachments")):
                raise _form_error("files", "BASE_TYPE_MAX_LENGTH", "Too many attachments.")
            uploads = []
            for name, file in files.items():
                index = name.removeprefix("files[").removesuffix("]")
                upload = sb.new_upload(net, account.account_id, "image")
                await absorb_file(file, upload)
                upload.kind = "video" if upload.magic == "video/mp4" else "image"
                upload.alt = described.get(index, {}).get("description")
                upload.data["filename"] = getattr(file, "filename", None)
                if upload.received > int(sb.option(net, "attachment_max_bytes")):
                    del sb.uploads[upload.id]
                    raise NetworkError(413, "Request entity too large", code="40005")
                upload.finish(0, False)
                uploads.append(upload)
            return body, uploads

        @router.post("/webhooks/{webhook_id}/{token}")
        async def execute(request: Request, webhook_id: str, token: str) -> Response:
            account = webhook(request, webhook_id)
            body, uploads = await message_body(request, account)
            content = checked_body(body)
            channel = request.query_params.get("thread_id") or account.settings.get(
                "channel_id", "0"
            )
            post = _store_message(sb, net, account, content, str(channel), webhook=True)
            if uploads:
                sb.attach(uploads, post)
            if request.query_params.get("wait", "").lower() != "true":
                return Response(status_code=204)
            return JSONResponse(message_view(post))

        @router.get("/webhooks/{webhook_id}/{token}/messages/{message_id}")
        async def webhook_message(
            request: Request, webhook_id: str, token: str, message_id: str
        ) -> dict[str, Any]:
            account = webhook(request, webhook_id)
            post = sb.find_post(net, message_id)
            if post is None or post.account_id != account.account_id:
                raise NetworkError(404, "Unknown Message", code="10008")
            return message_view(post)

        @router.post("/channels/{channel_id}/messages")
        async def create_message(request: Request, channel_id: str) -> dict[str, Any]:
            account = bot(request, channel_id)
            body, uploads = await message_body(request, account)
            content = checked_body(body)
            nonce = body.get("nonce")
            if nonce is not None and (not isinstance(nonce, str | int) or len(str(nonce)) > 25):
                raise _form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            enforce = body.get("enforce_nonce") is True and nonce is not None
            post = _store_message(
                sb,
                net,
                account,
                content,
                channel_id,
                key=f"{channel_id}:{nonce}" if enforce else None,
                key_ttl_s=float(sb.option(net, "nonce_window_s")),
            )
            if uploads and "media" not in post.data:
                sb.attach(uploads, post)
            view = message_view(post)
            if nonce is not None:
                view["nonce"] = nonce
            return view

        @router.get("/channels/{channel_id}/messages")
        async def history(request: Request, channel_id: str) -> list[dict[str, Any]]:
            bot(request, channel_id)
            q = request.query_params
            raw = q.get("limit", "50")
            if not raw.isdigit() or not 1 <= int(raw) <= 100:
                raise _form_error("limit", "NUMBER_TYPE_MAX", "int value must be between 1 and 100")
            limit = int(raw)
            anchors = [k for k in ("before", "after", "around") if k in q]
            if len(anchors) > 1 or any(not q[k].isdigit() for k in anchors):
                raise _form_error(anchors[0], "SNOWFLAKE_TYPE", "Value is not snowflake.")
            with sb._lock:
                posts = [
                    p
                    for p in sb.posts
                    if p.network == net and p.data.get("channel_id") == channel_id
                ]
            posts.sort(key=lambda p: int(p.id), reverse=True)  # ids are time-ordered snowflakes
            if "before" in q:
                posts = [p for p in posts if int(p.id) < int(q["before"])]
            elif "after" in q:
                posts = [p for p in posts if int(p.id) > int(q["after"])][-limit:]
            elif "around" in q:
                pivot = int(q["around"])
                newer = [p for p in posts if int(p.id) >= pivot][-(limit - limit // 2) :]
                posts = newer + [p for p in posts if int(p.id) < pivot][: limit // 2]
            return [message_view(p) for p in posts[:limit]]

        @router.get("/channels/{channel_id}/messages/{message_id}")
        async def channel_message(
            request: Request, channel_id: str, message_id: str
        ) -> dict[str, Any]:
            bot(request, channel_id)
            post = sb.find_post(net, message_id)
            if post is None or post.data.get("channel_id") != channel_id:
                raise NetworkError(404, "Unknown Message", code="10008")
            return message_view(post)

        @router.get("/oauth2/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(400, "Invalid OAuth2 request", code="50035")
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                challenge=q.get("code_challenge"),
                method=q.get("code_challenge_method", "S256"),
                scopes=tuple(q.get("scope", "").split()),
            )
            query = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{redirect_uri}?{query}", 302)

        @router.post("/oauth2/token")
        async def token(request: Request) -> dict[str, Any]:
            form = await read_form(request)
            client_id, secret = token_client(request, form)
            if not sb.client_accepted(net, client_id, secret, secret=True):
                raise NetworkError(
                    401, "invalid client", code="invalid_client", extra={"oauth": True}
                )
            grant = form.get("grant_type")
            try:
                if grant == "refresh_token":
                    pair = sb.refresh(net, form.get("refresh_token", ""))
                    account = sb.account(net, pair.access.account_id)
                elif grant == "authorization_code":
                    pair, account = sb.redeem_code(
                        net,
                        form.get("code", ""),
                        redirect_uri=form.get("redirect_uri"),
                        verifier=form.get("code_verifier"),
                    )
                else:
                    raise NetworkError(
                        400,
                        "unsupported grant type",
                        code="unsupported_grant_type",
                        extra={"oauth": True},
                    )
            except RefreshRefused:
                raise NetworkError(
                    400,
                    'Invalid "refresh_token" in request.',
                    code="invalid_grant",
                    extra={"oauth": True},
                ) from None
            out: dict[str, Any] = {
                "access_token": pair.access.value,
                "token_type": "Bearer",
                "expires_in": OAUTH_ACCESS_TTL_S,
                "refresh_token": pair.refresh.value if pair.refresh else None,
                "scope": " ".join(pair.access.scopes) or "webhook.incoming",
            }
            if grant == "authorization_code" and account is not None:
                out["webhook"] = {
                    "id": account.account_id,
                    "token": pair.access.value,
                    "type": 1,
                    "name": account.handle,
                    "channel_id": str(account.settings.get("channel_id", "0")),
                    "guild_id": str(account.settings.get("guild_id", "0")),
                    "url": f"https://discord.com/api/webhooks/{account.account_id}/…",
                }
            return out

        return router
