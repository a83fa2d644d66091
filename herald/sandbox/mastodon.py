"""Mastodon emulation: statuses with ``Idempotency-Key`` (kept one hour), instance limits,
account timeline, OAuth with PKCE, tokens that never expire. Errors are ``{"error": ...}``;
rate limits use ``X-RateLimit-*`` with an ISO 8601 reset.

The account timeline pages as Mastodon documents: ``limit`` (default 20, at most 40),
``max_id`` / ``since_id`` / ``min_id``, and a ``Link`` header whose ``rel="next"`` URL carries
the ``max_id`` of the next (older) page. The header comes with every non-empty page, the last
one included: a client learns it has reached the end from an empty page."""

from __future__ import annotations

import html
from collections.abc import Mapping
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
from herald.sandbox.counting import mastodon_length
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_file, read_multipart

INSTANCE = "https://mastodon.sandbox"


class MastodonNetwork(SandboxNetwork):
    name = "mastodon"
    access_ttl_s = None
    issues_refresh = False
    default_rate_limit = RateLimit(limit=300, window_s=300)
    default_options: ClassVar[dict[str, Any]] = {
        "max_characters": 500,
        "characters_reserved_per_url": 23,
        "max_media_attachments": 4,
        "idempotency_ttl_s": 3600,
        "image_size_limit": 16_777_216,
        "video_size_limit": 103_809_024,
        "description_limit": 1500,
        "processing_polls": 1,  # status reads a video stays in processing (images: none)
        "processing_fails": False,
    }

    def new_account_id(self, seq: int) -> str:
        return str(110_000_000_000_000_000 + seq)

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        return _store_status(sb, self.name, account, text, key=None, key_ttl_s=0.0)

    def error_response(self, err: NetworkError) -> Response:
        body: dict[str, Any] = {"error": err.message}
        if err.extra.get("oauth"):
            body = {"error": err.code or "invalid_request", "error_description": err.message}
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        reset = window.reset_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{window.reset_at.microsecond // 1000:03d}Z"
        )
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining),
            "X-RateLimit-Reset": reset,
        }

    def rate_limited_response(self, window: RateWindow) -> Response:
        headers = self.rate_limit_headers(window)
        return self.error_response(NetworkError(429, "Too many requests", headers=headers))

    def routes(self, sb: Sandbox) -> APIRouter:
        router = APIRouter()
        self._content_routes(router, sb)
        self._media_routes(router, sb)
        self._oauth_routes(router, sb)
        return router

    def _media_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.post("/api/v2/media")
        async def upload_media(request: Request) -> Response:
            account = _me(request)
            fields, files = await read_multipart(request)
            file = files.get("file")
            if file is None:
                raise NetworkError(422, "Validation failed: File can't be blank")
            description = fields.get("description")
            if description and len(description) > int(sb.option(net, "description_limit")):
                raise NetworkError(422, "Validation failed: Description is too long")
            upload = sb.new_upload(net, account.account_id, "image", alt=description)
            await absorb_file(file, upload)
            upload.kind = "video" if upload.magic == "video/mp4" else "image"
            limit = int(sb.option(net, f"{upload.kind}_size_limit"))
            if upload.received > limit:
                del sb.uploads[upload.id]
                raise NetworkError(
                    422, f"Validation failed: File file size must be less than {limit} Bytes"
                )
            polls = int(sb.option(net, "processing_polls")) if upload.kind == "video" else 0
            upload.finish(polls, bool(sb.option(net, "processing_fails")))
            status = 202 if upload.state == "in_progress" else 200
            return JSONResponse(_media_view(upload), status)

        @router.get("/api/v1/media/{media_id}")
        async def media_status(media_id: str, request: Request) -> Response:
            account = _me(request)
            upload = sb.find_upload(net, media_id)
            if upload is None or upload.account_id != account.account_id:
                raise NetworkError(404, "Record not found")
            state = upload.poll()
            if state == "failed":
                raise NetworkError(422, "Error processing thumbnail for uploaded media")
            return JSONResponse(_media_view(upload), 206 if state == "in_progress" else 200)

    def _content_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.get("/api/v2/instance")
        async def instance() -> dict[str, Any]:
            return {
                "domain": "mastodon.sandbox",
                "title": "Herald sandbox",
                "version": "4.3.0",
                "configuration": {
                    "urls": {"streaming": "wss://mastodon.sandbox"},
                    "statuses": {
                        "max_characters": sb.option(net, "max_characters"),
                        "max_media_attachments": sb.option(net, "max_media_attachments"),
                        "characters_reserved_per_url": sb.option(
                            net, "characters_reserved_per_url"
                        ),
                    },
                    "media_attachments": {
                        key: sb.option(net, key)
                        for key in ("image_size_limit", "video_size_limit", "description_limit")
                    },
                },
            }

        @router.get("/api/v1/accounts/verify_credentials")
        async def verify(request: Request) -> dict[str, Any]:
            return _account_view(_me(request))

        @router.post("/api/v1/statuses")
        async def create(request: Request) -> dict[str, Any]:
            account = _me(request)
            if request.headers.get("content-type", "").startswith("application/json"):
                body: dict[str, Any] = await read_json(request)
            else:
                body = dict(await read_form(request))
            text = body.get("status")
            attached = _attachable(sb, account, body.get("media_ids") or body.get("media_ids[]"))
            if not attached and (not isinstance(text, str) or not text.strip()):
                raise NetworkError(422, "Validation failed: Text can't be blank")
            text = text if isinstance(text, str) else ""
            limit = int(sb.option(net, "max_characters"))
            warning = body.get("spoiler_text")
            per_url = int(sb.option(net, "characters_reserved_per_url"))
            if mastodon_length(text, per_url, warning if isinstance(warning, str) else "") > limit:
                raise NetworkError(
                    422, f"Validation failed: Text character limit of {limit} exceeded"
                )
            post = _store_status(
                sb,
                net,
                account,
                text,
                key=request.headers.get("idempotency-key"),
                key_ttl_s=float(sb.option(net, "idempotency_ttl_s")),
                visibility=body.get("visibility") or "public",
            )
            if attached and "media" not in post.data:
                sb.attach(attached, post)
            return _status_view(post, account)

        @router.get("/api/v1/accounts/{account_id}/statuses")
        async def timeline(request: Request, account_id: str) -> Response:
            _me(request)
            account = sb.account(net, account_id)
            if account is None:
                raise NetworkError(404, "Record not found")
            q = request.query_params
            raw = q.get("limit", "20")
            limit = min(int(raw), 40) if raw.isdigit() and int(raw) > 0 else 20
            page = _page(sb.posts_of(net, account_id), q, limit)
            headers: dict[str, str] = {}
            if page:
                base = f"{str(request.base_url).rstrip('/')}/{net}{request.url.path}"
                older = urlencode({"limit": limit, "max_id": page[-1].id})
                newer = urlencode({"limit": limit, "min_id": page[0].id})
                headers["Link"] = f'<{base}?{older}>; rel="next", <{base}?{newer}>; rel="prev"'
            return JSONResponse([_status_view(p, account) for p in page], headers=headers)

        @router.get("/api/v1/statuses/{status_id}")
        async def status(request: Request, status_id: str) -> dict[str, Any]:
            _me(request)
            post = sb.find_post(net, status_id)
            account = sb.account(net, post.account_id) if post else None
            if post is None or account is None:
                raise NetworkError(404, "Record not found")
            return _status_view(post, account)

    def _oauth_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.get("/oauth/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(
                    400, "invalid_request", code="invalid_request", extra={"oauth": True}
                )
            if q.get("code_challenge") and q.get("code_challenge_method") != "S256":
                raise NetworkError(
                    400, "only S256 is supported", code="invalid_request", extra={"oauth": True}
                )
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                challenge=q.get("code_challenge"),
                scopes=tuple(q.get("scope", "read").split()),
            )
            query = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

        @router.post("/oauth/revoke")
        async def revoke(request: Request) -> dict[str, Any]:
            form = await read_form(request)
            client_id, secret = token_client(request, form)
            if not sb.client_accepted(net, client_id, secret, secret=True):
                raise NetworkError(
                    403,
                    "You are not authorized to revoke this token",
                    code="unauthorized_client",
                    extra={"oauth": True},
                )
            sb.revoke(form.get("token", ""))
            return {}

        @router.post("/oauth/token")
        async def token(request: Request) -> dict[str, Any]:
            form = await read_form(request)
            client_id, secret = token_client(request, form)
            if not sb.client_accepted(net, client_id, secret, secret=True):
                raise NetworkError(
                    401,
                    "Client authentication failed due to unknown client, no client "
                    "authentication included, or unsupported authentication method.",
                    code="invalid_client",
                    extra={"oauth": True},
                )
            if form.get("grant_type") != "authorization_code":
                raise NetworkError(
                    400, "unsupported grant", code="unsupported_grant_type", extra={"oauth": True}
                )
            try:
                pair, _ = sb.redeem_code(
                    net,
                    form.get("code", ""),
                    redirect_uri=form.get("redirect_uri"),
                    verifier=form.get("code_verifier"),
                )
            except RefreshRefused:
                raise NetworkError(
                    400,
                    "The provided authorization grant is invalid",
                    code="invalid_grant",
                    extra={"oauth": True},
                ) from None
            return {
                "access_token": pair.access.value,
                "token_type": "Bearer",
                "scope": " ".join(pair.access.scopes),
                "created_at": int(sb.now().timestamp()),
            }


def _media_view(upload: SandboxUpload) -> dict[str, Any]:
    ready = upload.state == "succeeded"
    return {
        "id": upload.id,
        "type": upload.kind,
        "url": f"{INSTANCE}/system/media/{upload.id}" if ready else None,
        "description": upload.alt,
    }


def _attachable(sb: Sandbox, account: SandboxAccount, ids: Any) -> list[SandboxUpload]:
    if not ids:
        return []
    if not isinstance(ids, list) or len(ids) > int(sb.option("mastodon", "max_media_attachments")):
        raise NetworkError(422, "Validation failed: Media attachments are too many")
    found = []
    for media_id in ids:
        upload = sb.find_upload("mastodon", str(media_id))
        if upload is None or upload.account_id != account.account_id:
            raise NetworkError(422, "Validation failed: Media attachment not found")
        if upload.state != "succeeded":
            raise NetworkError(422, "Cannot attach files that have not finished processing")
        found.append(upload)
    return found


def _store_status(
    sb: Sandbox,
    net: str,
    account: SandboxAccount,
    text: str,
    *,
    key: str | None,
    key_ttl_s: float,
    visibility: str = "public",
) -> SandboxPost:
    post, _ = sb.create_post(
        net,
        account.account_id,
        text,
        idempotency_key=key,
        key_ttl_s=key_ttl_s,
        data={"visibility": visibility},
    )
    post.url = f"{INSTANCE}/@{account.handle}/{post.id}"
    return post


def _page(posts: list[SandboxPost], q: Mapping[str, str], limit: int) -> list[SandboxPost]:
    """One page of a timeline (newest first): ``max_id`` older than, ``since_id`` newer
    than, ``min_id`` the page immediately newer than the given id."""
    bounds: dict[str, int] = {}
    for name in ("max_id", "since_id", "min_id"):
        raw = q.get(name)
        if raw is not None:
            if not raw.isdigit():
                raise NetworkError(404, "Record not found")
            bounds[name] = int(raw)
    if "max_id" in bounds:
        posts = [p for p in posts if int(p.id) < bounds["max_id"]]
    if "since_id" in bounds:
        posts = [p for p in posts if int(p.id) > bounds["since_id"]]
    if "min_id" in bounds:
        return [p for p in posts if int(p.id) > bounds["min_id"]][-limit:]
    return posts[:limit]


def _me(request: Request) -> SandboxAccount:
    auth = request_auth(request)
    if auth.status is not TokenStatus.VALID or auth.account is None:
        raise NetworkError(401, "The access token is invalid")
    return auth.account


def _account_view(account: SandboxAccount) -> dict[str, Any]:
    return {
        "id": account.account_id,
        "username": account.handle,
        "acct": account.handle,
        "display_name": account.handle,
        "url": f"{INSTANCE}/@{account.handle}",
    }


def _status_view(post: SandboxPost, account: SandboxAccount) -> dict[str, Any]:
    content = "<p>" + html.escape(post.text).replace("\n", "<br />") + "</p>"
    return {
        "id": post.id,
        "created_at": post.created_at.isoformat().replace("+00:00", "Z"),
        "uri": f"{INSTANCE}/users/{account.handle}/statuses/{post.id}",
        "url": post.url,
        "content": content,
        "visibility": post.data.get("visibility", "public"),
        "account": _account_view(account),
        "favourites_count": post.data.get("favourites_count", 3),
        "reblogs_count": post.data.get("reblogs_count", 1),
        "replies_count": post.data.get("replies_count", 0),
    }
