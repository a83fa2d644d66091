"""Reddit emulation: ``/api/submit`` with its errors inside an HTTP 200, the user's submitted
listing, ``/api/info``, ``/api/v1/me``, and the token endpoint with HTTP Basic client auth
and refresh tokens that do not rotate. API and token host are both ``<sandbox>/reddit``.

A 401 carries ``WWW-Authenticate: Bearer realm="reddit", error="invalid_token"``; every
answer to a valid token carries ``X-Ratelimit-Used/-Remaining/-Reset`` (seconds to reset).
Options: ``subreddits`` (None = every name exists), ``post_interval_s`` (the per-account
posting throttle answered with ``RATELIMIT`` … "Take a break for N minutes").

Listings page as Reddit's do: ``limit`` (default 25, at most 100), ``after`` / ``before`` the
fullname (``t3_<id>``) an earlier page gave in ``data.after`` / ``data.before``; ``data.after``
is null on the last page, and a listing reaches back 1,000 items at most.
"""

from __future__ import annotations

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
    basic_client,
    read_form,
    read_json,
    request_auth,
)
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_file, read_multipart
from herald.sandbox.paging import newer_than, older_than

#: How far back any listing reaches.
LISTING_CAP = 1000
_CHALLENGE = 'Bearer realm="reddit", error="invalid_token"'
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    out = ""
    while number:
        number, rem = divmod(number, 36)
        out = _BASE36[rem] + out
    return out or "0"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:50] or "post"


def _asset_at(sb: Sandbox, account: SandboxAccount, url: str) -> SandboxUpload | None:
    with sb._lock:
        found = [u for u in sb.uploads.values() if u.data.get("location") == url]
    live = [u for u in found if u.account_id == account.account_id and u.state == "succeeded"]
    return live[0] if live else None


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Response(body, status, media_type="application/xml")


def _errors(*triples: tuple[str, str, str]) -> dict[str, Any]:
    return {"json": {"errors": [list(t) for t in triples]}}


def _store_submission(
    sb: Sandbox,
    net: str,
    account: SandboxAccount,
    *,
    sr: str,
    title: str,
    text: str,
    link: str | None = None,
) -> SandboxPost:
    post_id = _base36(1_900_000_000 + sb.next_id())
    permalink = f"/r/{sr}/comments/{post_id}/{_slug(title)}/"
    post, _ = sb.create_post(
        net,
        account.account_id,
        text,
        post_id=post_id,
        url=f"https://www.reddit.com{permalink}",
        data={
            "title": title,
            "subreddit": sr,
            "permalink": permalink,
            "author": account.handle,
            "link": link,
        },
    )
    return post


class RedditNetwork(SandboxNetwork):
    name = "reddit"
    access_ttl_s = 86_400.0  # read expires_in; it was 3,600 s historically
    issues_refresh = True
    rotates_refresh = False
    reuse_revokes_family = False
    default_rate_limit = RateLimit(limit=1000, window_s=600)
    default_options: ClassVar[dict[str, Any]] = {
        "subreddits": None,
        "post_interval_s": 0,
        "max_title_length": 300,
        "max_text_length": 40_000,
        # Media: a lease from /api/media/asset.json, then an S3-style form upload.
        "image_max_bytes": 20_000_000,
        "video_max_bytes": 1_000_000_000,
        "lease_ttl_s": 3600,
        "max_gallery_items": 20,
    }

    def new_account_id(self, seq: int) -> str:
        return f"sandbox_user{seq}"

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        subreddit = str(options.get("subreddit") or "sandbox")
        title = text[:300] or "post"
        return _store_submission(sb, self.name, account, sr=subreddit, title=title, text=text)

    def error_response(self, err: NetworkError) -> Response:
        if err.extra.get("oauth"):
            return JSONResponse({"error": err.code}, err.status, headers=err.headers)
        headers = dict(err.headers)
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", _CHALLENGE)
        if err.code == "insufficient_scope":
            headers["WWW-Authenticate"] = 'Bearer realm="reddit", error="insufficient_scope"'
        return JSONResponse(
            {"message": err.message, "error": err.status}, err.status, headers=headers
        )

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "X-Ratelimit-Used": str(window.limit - window.remaining),
            "X-Ratelimit-Remaining": f"{float(window.remaining):.1f}",
            "X-Ratelimit-Reset": str(ceil(window.window_s)),
        }

    def rate_limited_response(self, window: RateWindow) -> Response:
        return self.error_response(
            NetworkError(429, "Too Many Requests", headers=self.rate_limit_headers(window))
        )

    def routes(self, sb: Sandbox) -> APIRouter:  # noqa: PLR0915 - one closure per endpoint
        router = APIRouter()
        net = self.name

        def user(request: Request) -> SandboxAccount:
            auth = request_auth(request)
            if auth.status is not TokenStatus.VALID or auth.account is None:
                raise NetworkError(401, "Unauthorized")
            return auth.account

        def thing(post: SandboxPost) -> dict[str, Any]:
            return {
                "kind": "t3",
                "data": {
                    "id": post.id,
                    "name": f"t3_{post.id}",
                    "title": post.data["title"],
                    "subreddit": post.data["subreddit"],
                    "selftext": post.text,
                    "url": post.data.get("link") or post.url,
                    "permalink": post.data["permalink"],
                    "created_utc": post.created_at.timestamp(),
                    "author": post.data["author"],
                    "score": 1,
                    "ups": 1,
                    "upvote_ratio": 1.0,
                    "num_comments": 0,
                    "num_crossposts": 0,
                    "view_count": None,
                },
            }

        def listing(
            posts: list[SandboxPost], *, after: str | None = None, before: str | None = None
        ) -> dict[str, Any]:
            return {
                "kind": "Listing",
                "data": {
                    "after": after,
                    "before": before,
                    "dist": len(posts),
                    "children": [thing(p) for p in posts],
                },
            }

        def throttled(account: SandboxAccount) -> int | None:
            interval = float(sb.option(net, "post_interval_s"))
            mine = sb.posts_of(net, account.account_id)
            if not interval or not mine:
                return None
            left = interval - (sb.now() - mine[0].created_at).total_seconds()
            return ceil(left / 60) if left > 0 else None

        @router.post("/api/media/asset.json")
        async def lease(request: Request) -> dict[str, Any]:
            account = user(request)
            form = await read_form(request)
            mime = form.get("mimetype", "")
            if not form.get("filepath") or not mime.startswith(("image/", "video/")):
                raise NetworkError(400, "filepath and an image or video mimetype are required")
            kind = "video" if mime.startswith("video/") else "image"
            upload = sb.new_upload(
                net, account.account_id, kind, ttl_s=float(sb.option(net, "lease_ttl_s"))
            )
            upload.data["key"] = f"rte_images/{upload.id}/{form['filepath']}"
            base = str(request.base_url).rstrip("/")
            return {
                "args": {
                    "action": f"{base}/{net}/media-upload",
                    "fields": [
                        {"name": "key", "value": upload.data["key"]},
                        {"name": "acl", "value": "public-read"},
                        {"name": "Content-Type", "value": mime},
                    ],
                },
                "asset": {
                    "asset_id": upload.id,
                    "processing_state": "incomplete",
                    "websocket_url": f"wss://ws.sandbox/rte_images/{upload.id}",
                },
            }

        @router.post("/media-upload")
        async def s3(request: Request) -> Response:
            # The bucket takes the lease's fields, not a bearer token.
            fields, files = await read_multipart(request)
            key = fields.get("key", "")
            upload = next((u for u in sb.uploads.values() if u.data.get("key") == key), None)
            if (
                upload is None
                or "file" not in files
                or (upload.expires_at is not None and upload.expires_at <= sb.now())
            ):
                return _s3_error(403, "AccessDenied", "Invalid according to Policy")
            limit = int(sb.option(net, f"{upload.kind}_max_bytes"))
            await absorb_file(files["file"], upload)
            if upload.received > limit:
                upload.state = "failed"
                return _s3_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum")
            upload.finish(0, False)
            location = f"https://reddit-uploaded-media.sandbox/{key}"
            upload.data["location"] = location
            body = f"<PostResponse><Location>{location}</Location><Key>{key}</Key></PostResponse>"
            return Response(body, 201, media_type="application/xml")

        @router.post("/api/submit_gallery_post.json")
        async def gallery(request: Request) -> dict[str, Any]:
            account = user(request)
            body = await read_json(request)
            sr, title = str(body.get("sr", "")).strip(), str(body.get("title", ""))
            items = body.get("items")
            most = int(sb.option(net, "max_gallery_items"))
            if not isinstance(items, list) or not 2 <= len(items) <= most:
                return _errors(("BAD_GALLERY", f"a gallery needs 2 to {most} items", "items"))
            if not sr or not title.strip():
                return _errors(("NO_TEXT", "we need something here", "title"))
            assets = []
            for item in items:
                asset = sb.find_upload(net, str(item.get("media_id")))
                if (
                    asset is None
                    or asset.account_id != account.account_id
                    or (asset.state != "succeeded")
                ):
                    return _errors(("MEDIA_NOT_FOUND", "unknown media_id", "items"))
                asset.alt = item.get("caption") or None
                assets.append(asset)
            post = _store_submission(sb, net, account, sr=sr, title=title, text="")
            sb.attach(assets, post)
            return {"json": {"errors": [], "data": {"id": f"t3_{post.id}", "url": post.url}}}

        @router.post("/api/submit")
        async def submit(request: Request) -> dict[str, Any]:  # noqa: PLR0911 - one per error
            account = user(request)
            form = await read_form(request)
            sr, title = form.get("sr", "").strip(), form.get("title", "")
            kind, text = form.get("kind", "self"), form.get("text", "")
            known = sb.option(net, "subreddits")
            if not sr or (known is not None and sr.lower() not in {s.lower() for s in known}):
                return _errors(("SUBREDDIT_NOEXIST", "that subreddit doesn't exist", "sr"))
            if not title.strip():
                return _errors(("NO_TEXT", "we need something here", "title"))
            if len(title) > int(sb.option(net, "max_title_length")):
                return _errors(("TOO_LONG", "this is too long (max: 300)", "title"))
            if len(text) > int(sb.option(net, "max_text_length")):
                return _errors(("TOO_LONG", "this is too long (max: 40000)", "text"))
            if kind == "link" and not form.get("url"):
                return _errors(("NO_URL", "a url is required", "url"))
            if kind not in ("self", "link", "image", "video"):
                return _errors(("INVALID_OPTION", "that option is not valid", "kind"))
            assets: list[SandboxUpload] = []
            if kind in ("image", "video"):
                asset = _asset_at(sb, account, form.get("url", ""))
                if asset is None:
                    return _errors(("NO_URL", "the media url is not an uploaded asset", "url"))
                assets = [asset]
            minutes = throttled(account)
            if minutes is not None:
                unit = "minute" if minutes == 1 else "minutes"
                return _errors(
                    (
                        "RATELIMIT",
                        f"Looks like you've been doing that a lot. Take a break for {minutes} "
                        f"{unit} before trying again.",
                        "ratelimit",
                    )
                )
            post = _store_submission(
                sb, net, account, sr=sr, title=title, text=text, link=form.get("url")
            )
            if assets:
                sb.attach(assets, post)
            return {
                "json": {
                    "errors": [],
                    "data": {
                        "url": post.url,
                        "id": post.id,
                        "name": f"t3_{post.id}",
                        "drafts_count": 0,
                    },
                }
            }

        @router.get("/user/{username}/submitted")
        async def submitted(request: Request, username: str) -> dict[str, Any]:
            user(request)
            owner = sb.find_account(net, handle=username) or sb.account(net, username)
            if owner is None:
                raise NetworkError(404, "Not Found")
            q = request.query_params
            raw = q.get("limit", "25")
            limit = min(int(raw), 100) if raw.isdigit() and int(raw) > 0 else 25
            posts = sb.posts_of(net, owner.account_id)[:LISTING_CAP]
            first = True
            if q.get("after") or q.get("before"):
                older = bool(q.get("after"))
                anchor = (q.get("after") or q.get("before") or "").removeprefix("t3_")
                # Reddit answers an unknown anchor with an empty listing, not an error.
                rest = (older_than if older else newer_than)(posts, anchor) or []
                posts = rest if older else rest[-limit:]
                first = False
            page = posts[:limit]
            return listing(
                page,
                after=f"t3_{page[-1].id}" if len(posts) > limit else None,
                before=f"t3_{page[0].id}" if page and not first else None,
            )

        @router.get("/api/info")
        async def info(request: Request) -> dict[str, Any]:
            user(request)
            wanted = [i.removeprefix("t3_") for i in request.query_params.get("id", "").split(",")]
            found = [p for p in (sb.find_post(net, i) for i in wanted if i) if p is not None]
            return listing(found)

        @router.get("/api/v1/me")
        async def me(request: Request) -> dict[str, Any]:
            account = user(request)
            return {"name": account.handle, "id": account.account_id}

        @router.get("/api/v1/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(400, "invalid request")
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                scopes=tuple(q.get("scope", "").split()),
            )
            return RedirectResponse(
                f"{redirect_uri}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302
            )

        @router.post("/api/v1/revoke_token", status_code=204)
        async def revoke_token(request: Request) -> Response:
            client = basic_client(request)
            if client is None or not sb.client_accepted(net, *client, secret=True):
                raise NetworkError(401, "Unauthorized")
            form = await read_form(request)
            issued = sb.tokens.get(form.get("token", ""))
            if issued is not None and issued.kind == "refresh":
                sb.revoke_family(issued.family)  # the grant goes, access tokens with it
            elif issued is not None:
                sb.revoke(issued.value)
            return Response(status_code=204)

        @router.post("/api/v1/access_token")
        async def access_token(request: Request) -> dict[str, Any]:
            # HTTP Basic only; a missing or wrong client is a bare 401 (no OAuth error body).
            client = basic_client(request)
            if client is None or not sb.client_accepted(net, *client, secret=True):
                raise NetworkError(401, "Unauthorized")
            form = await read_form(request)
            grant = form.get("grant_type")
            try:
                if grant == "refresh_token":
                    pair = sb.refresh(net, form.get("refresh_token", ""))
                    refresh = None  # Reddit's refresh tokens do not rotate
                elif grant == "authorization_code":
                    pair, _ = sb.redeem_code(
                        net,
                        form.get("code", ""),
                        redirect_uri=form.get("redirect_uri"),
                        verifier=None,
                    )
                    refresh = pair.refresh.value if pair.refresh else None
                else:
                    raise NetworkError(
                        400,
                        "unsupported_grant_type",
                        code="unsupported_grant_type",
                        extra={"oauth": True},
                    )
            except RefreshRefused:
                raise NetworkError(
                    400, "invalid_grant", code="invalid_grant", extra={"oauth": True}
                ) from None
            view = pair.view(sb.now())
            out: dict[str, Any] = {
                "access_token": view["access_token"],
                "token_type": "bearer",
                "expires_in": view.get("expires_in", 86_400),
                "scope": view["scope"] or "identity submit read",
            }
            if refresh:
                out["refresh_token"] = refresh
            return out

        return router
