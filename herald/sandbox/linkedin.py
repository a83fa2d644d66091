"""LinkedIn emulation: ``/rest/posts`` (201, empty body, ``x-restli-id``), ``/v2/userinfo``,
``/v2/socialActions``, OAuth on ``/oauth/v2/...`` with non-rotating refresh tokens whose
expiry never restarts. Errors are ``{status, serviceErrorCode, code, message}``; a 429 has
no rate-limit headers and the daily quota resets at midnight UTC."""

from __future__ import annotations

import re
import secrets
from typing import Any, ClassVar
from urllib.parse import unquote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from herald.sandbox.core import (
    NetworkError,
    RefreshRefused,
    Sandbox,
    SandboxAccount,
    SandboxNetwork,
    TokenStatus,
    read_form,
    read_json,
    request_auth,
)
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_body

_ESCAPED = re.compile(r"\\(.)")
_SERVICE_CODES = {400: 100, 401: 65600, 403: 100, 404: 100, 422: 100, 426: 100, 429: 101}
_CODES = {
    400: "INVALID_REQUEST",
    401: "INVALID_ACCESS_TOKEN",
    403: "ACCESS_DENIED",
    404: "NOT_FOUND",
    422: "UNPROCESSABLE_ENTITY",
    426: "VERSION_INACTIVE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
}


class LinkedInNetwork(SandboxNetwork):
    name = "linkedin"
    access_ttl_s = 60 * 86400.0
    refresh_ttl_s = 365 * 86400.0
    rotates_refresh = False
    default_rate_limit = RateLimit(limit=1000, window_s=86400, midnight_utc=True)
    default_options: ClassVar[dict[str, Any]] = {
        "max_commentary": 3000,
        "active_versions": ["202504", "202507", "202510", "202601"],
        # Media: /rest/images and /rest/videos initializeUpload, PUT to the upload URL.
        "image_max_bytes": 36_152_320,
        "video_max_bytes": 500 * 1024 * 1024,
        "video_part_bytes": 4 * 1024 * 1024,
        "upload_url_ttl_s": 3600,
        "processing_polls": 1,
        "processing_fails": False,
    }

    def new_account_id(self, seq: int) -> str:
        return secrets.token_urlsafe(7).replace("-", "a").replace("_", "b")

    def error_response(self, err: NetworkError) -> Response:
        if err.extra.get("oauth"):
            body: dict[str, Any] = {
                "error": err.code or "invalid_request",
                "error_description": err.message,
            }
            return JSONResponse(body, err.status, headers=err.headers)
        code = err.code if err.code and err.code.isupper() else _CODES.get(err.status)
        body = {
            "status": err.status,
            "serviceErrorCode": _SERVICE_CODES.get(err.status, 0),
            "message": err.message,
        }
        if code:
            body["code"] = code
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limited_response(self, window: RateWindow) -> Response:
        # LinkedIn sends neither rate-limit headers nor Retry-After.
        return self.error_response(
            NetworkError(
                429,
                "Resource level throttle APPLICATION DAY limit for calls to this resource "
                "is reached.",
            )
        )

    def routes(self, sb: Sandbox) -> APIRouter:
        router = APIRouter()
        self._api_routes(router, sb)
        self._media_routes(router, sb)
        self._oauth_routes(router, sb)
        return router

    def _media_routes(self, router: APIRouter, sb: Sandbox) -> None:  # noqa: PLR0915
        net = self.name

        def owned(account: SandboxAccount, body: Any, field: str) -> dict[str, Any]:
            request_body = body.get(field) if isinstance(body, dict) else None
            if not isinstance(request_body, dict):
                raise NetworkError(422, f"/{field} is required")
            owner = request_body.get("owner")
            if owner != f"urn:li:person:{account.account_id}" and not str(owner).startswith(
                "urn:li:organization:"
            ):
                raise NetworkError(403, "Not enough permissions to upload as this owner")
            return request_body

        def upload_url(request: Request, upload: SandboxUpload, part: int | None = None) -> str:
            base = str(request.base_url).rstrip("/")
            key = upload.data["key"]
            return f"{base}/{net}/dms-uploads/{key}" + (f"?part={part}" if part is not None else "")

        @router.post("/rest/images")
        async def images(request: Request) -> dict[str, Any]:
            account = _me(request)
            if request.query_params.get("action") != "initializeUpload":
                raise NetworkError(400, "Unsupported action")
            owned(account, await read_json(request), "initializeUploadRequest")
            ttl = float(sb.option(net, "upload_url_ttl_s"))
            upload = sb.new_upload(net, account.account_id, "image", ttl_s=ttl)
            _rename(sb, upload, f"urn:li:image:D4E10AQ{upload.id}")
            expires = upload.expires_at.timestamp() * 1000 if upload.expires_at else 0
            return {
                "value": {
                    "uploadUrlExpiresAt": int(expires),
                    "uploadUrl": upload_url(request, upload),
                    "image": upload.id,
                }
            }

        @router.post("/rest/videos")
        async def videos(request: Request) -> dict[str, Any]:
            account = _me(request)
            action = request.query_params.get("action")
            body = await read_json(request)
            if action == "finalizeUpload":
                final = body.get("finalizeUploadRequest") or {}
                upload = sb.find_upload(net, str(final.get("video")))
                if upload is None or upload.account_id != account.account_id:
                    raise NetworkError(404, "Video not found")
                if final.get("uploadedPartIds") != upload.data["etags"] or (
                    upload.received != upload.declared_bytes
                ):
                    raise NetworkError(400, "Uploaded parts do not match the upload instructions")
                upload.finish(
                    int(sb.option(net, "processing_polls")),
                    bool(sb.option(net, "processing_fails")),
                )
                return {}
            if action != "initializeUpload":
                raise NetworkError(400, "Unsupported action")
            init = owned(account, body, "initializeUploadRequest")
            size = init.get("fileSizeBytes")
            if not isinstance(size, int) or size <= 0:
                raise NetworkError(422, "/initializeUploadRequest/fileSizeBytes is required")
            limit = int(sb.option(net, "video_max_bytes"))
            if size > limit:
                raise NetworkError(400, f"fileSizeBytes {size} exceeds the limit of {limit}")
            ttl = float(sb.option(net, "upload_url_ttl_s"))
            upload = sb.new_upload(net, account.account_id, "video", ttl_s=ttl, declared_bytes=size)
            _rename(sb, upload, f"urn:li:video:D4E10AQ{upload.id}")
            part = int(sb.option(net, "video_part_bytes"))
            upload.data["etags"] = [None] * ((size + part - 1) // part)
            instructions = [
                {
                    "uploadUrl": upload_url(request, upload, n),
                    "firstByte": first,
                    "lastByte": min(first + part, size) - 1,
                }
                for n, first in enumerate(range(0, size, part))
            ]
            return {
                "value": {
                    "video": upload.id,
                    "uploadInstructions": instructions,
                    "uploadToken": "",
                    "uploadUrlsExpireAt": int(upload.expires_at.timestamp() * 1000)
                    if upload.expires_at
                    else 0,
                }
            }

        @router.put("/dms-uploads/{key}")
        async def put_bytes(request: Request, key: str) -> Response:
            _me(request)
            upload = next((u for u in sb.uploads.values() if u.data.get("key") == key), None)
            if upload is None or (upload.expires_at and upload.expires_at <= sb.now()):
                raise NetworkError(400, "The upload URL is invalid or has expired")
            kind = upload.kind
            limit = int(sb.option(net, f"{kind}_max_bytes"))
            if not await absorb_body(request, upload, limit):
                raise NetworkError(413, f"The {kind} is larger than {limit} bytes")
            part = request.query_params.get("part")
            if part is None:
                upload.finish(int(sb.option(net, "processing_polls")), False)
                return Response(status_code=201)
            etag = f"etag-{upload.data['key']}-{part}"
            upload.data["etags"][int(part)] = etag
            return Response(status_code=200, headers={"etag": etag})

        @router.get("/rest/{collection}/{urn:path}")
        async def asset(request: Request, collection: str, urn: str) -> dict[str, Any]:
            account = _me(request)
            upload = sb.find_upload(net, unquote(urn))
            if (
                collection not in ("images", "videos")
                or upload is None
                or (upload.account_id != account.account_id)
            ):
                raise NetworkError(404, "Not found")
            state = upload.poll() if upload.state != "uploading" else "uploading"
            status = {
                "uploading": "WAITING_UPLOAD",
                "in_progress": "PROCESSING",
                "succeeded": "AVAILABLE",
                "failed": "PROCESSING_FAILED",
            }[state]
            return {"id": upload.id, "status": status}

    def _api_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.post("/rest/posts", status_code=201)
        async def create(request: Request) -> Response:
            account = _me(request)
            version = request.headers.get("linkedin-version")
            if not version:
                raise NetworkError(
                    400,
                    "A version must be present. Please specify a version "
                    "by adding the LinkedIn-Version header.",
                    code="VERSION_MISSING",
                )
            if version not in sb.option(net, "active_versions"):
                raise NetworkError(
                    426, f"Requested version {version} is not active", code="NONEXISTENT_VERSION"
                )
            body = await read_json(request)
            uploads = _content_uploads(sb, account, body.get("content"))
            author = body.get("author")
            if author != f"urn:li:person:{account.account_id}" and not (
                isinstance(author, str) and author.startswith("urn:li:organization:")
            ):
                raise NetworkError(403, "Not enough permissions to post as this author")
            commentary = body.get("commentary")
            if not isinstance(commentary, str) or body.get("lifecycleState") != "PUBLISHED":
                raise NetworkError(422, "/commentary and /lifecycleState are required")
            text = _ESCAPED.sub(r"\1", commentary)
            if len(text) > int(sb.option(net, "max_commentary")):
                raise NetworkError(422, "/commentary exceeds the maximum allowed length")
            for other in sb.posts_of(net, account.account_id):
                if other.text == text:
                    raise NetworkError(
                        422, f"Content is a duplicate of {other.id}", code="DUPLICATE_POST"
                    )
            urn = f"urn:li:share:{7_300_000_000_000_000_000 + sb.next_id()}"
            sb.create_post(
                net,
                account.account_id,
                text,
                post_id=urn,
                url=f"https://www.linkedin.com/feed/update/{urn}",
                data={"author": author},
            )
            if uploads:
                post = sb.find_post(net, urn)
                assert post is not None
                sb.attach(uploads, post)
            return Response(
                status_code=201, headers={"x-restli-id": urn, "x-li-uuid": secrets.token_hex(8)}
            )

        @router.get("/v2/userinfo")
        async def userinfo(request: Request) -> dict[str, Any]:
            account = _me(request)
            return {
                "sub": account.account_id,
                "name": account.handle,
                "given_name": account.handle,
                "email_verified": True,
            }

        @router.get("/v2/socialActions/{urn:path}")
        async def social_actions(request: Request, urn: str) -> dict[str, Any]:
            _me(request)
            post = sb.find_post(net, unquote(urn))
            if post is None:
                raise NetworkError(404, "Not Found")
            return {
                "target": post.id,
                "likesSummary": {"totalLikes": 7, "likedByCurrentUser": False},
                "commentsSummary": {"aggregatedTotalComments": 2, "totalFirstLevelComments": 2},
            }

    def _oauth_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.get("/oauth/v2/authorization")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(
                    400,
                    "invalid authorization request",
                    code="invalid_request",
                    extra={"oauth": True},
                )
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                scopes=tuple(q.get("scope", "").split()),
            )
            query = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

        @router.post("/oauth/v2/accessToken")
        async def token(request: Request) -> dict[str, Any]:
            form = await read_form(request)
            # LinkedIn takes the client in the form only (client_secret_post).
            client = (form.get("client_id"), form.get("client_secret"))
            if not sb.client_accepted(net, *client, secret=True):
                raise NetworkError(
                    401,
                    "Client authentication failed",
                    code="invalid_client",
                    extra={"oauth": True},
                )
            try:
                if form.get("grant_type") == "authorization_code":
                    pair, _ = sb.redeem_code(
                        net,
                        form.get("code", ""),
                        redirect_uri=form.get("redirect_uri"),
                        verifier=None,
                    )
                elif form.get("grant_type") == "refresh_token":
                    pair = sb.refresh(net, form.get("refresh_token", ""))
                else:
                    raise NetworkError(
                        400,
                        "Unsupported grant type",
                        code="unsupported_grant_type",
                        extra={"oauth": True},
                    )
            except RefreshRefused:
                raise NetworkError(
                    400,
                    "The provided authorization grant or refresh token is "
                    "invalid, expired or revoked",
                    code="invalid_grant",
                    extra={"oauth": True},
                ) from None
            view = pair.view(sb.now())
            return {
                k: view[k]
                for k in (
                    "access_token",
                    "expires_in",
                    "refresh_token",
                    "refresh_token_expires_in",
                    "scope",
                )
                if k in view
            }


def _rename(sb: Sandbox, upload: SandboxUpload, urn: str) -> None:
    with sb._lock:
        del sb.uploads[upload.id]
        upload.data["key"] = upload.id
        upload.id = urn
        sb.uploads[urn] = upload


def _content_uploads(sb: Sandbox, account: SandboxAccount, content: Any) -> list[SandboxUpload]:
    """The images or video a post's ``content`` references: AVAILABLE, this member's."""
    if not isinstance(content, dict):
        return []
    if isinstance(content.get("media"), dict):
        items = [content["media"]]
    elif isinstance(content.get("multiImage"), dict):
        items = content["multiImage"].get("images") or []
        if not 2 <= len(items) <= 20:
            raise NetworkError(422, "/content/multiImage/images must hold 2 to 20 images")
    else:
        return []
    found = []
    for item in items:
        upload = sb.find_upload("linkedin", str(item.get("id") if isinstance(item, dict) else ""))
        if upload is None or upload.account_id != account.account_id:
            raise NetworkError(422, f"/content media {item} is not a known asset")
        if upload.state != "succeeded":
            raise NetworkError(422, f"/content media {upload.id} is not AVAILABLE")
        upload.alt = item.get("altText")
        found.append(upload)
    return found


def _me(request: Request) -> SandboxAccount:
    auth = request_auth(request)
    if auth.status is TokenStatus.VALID and auth.account is not None:
        return auth.account
    if auth.status is TokenStatus.EXPIRED:
        raise NetworkError(
            401, "The token used in the request has expired", code="EXPIRED_ACCESS_TOKEN"
        )
    if auth.status is TokenStatus.REVOKED:
        raise NetworkError(
            401, "The token used in the request has been revoked", code="REVOKED_ACCESS_TOKEN"
        )
    raise NetworkError(401, "Invalid access token", code="INVALID_ACCESS_TOKEN")
