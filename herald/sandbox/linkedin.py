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
        self._oauth_routes(router, sb)
        return router

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
