"""X API v2 emulation: tweets, users/me, user timeline, OAuth 2.0 with PKCE and single-use
refresh tokens (reuse revokes the family). Errors are problem-details JSON; the token
endpoint answers in OAuth's ``{error, error_description}`` shape. Tweets are shown back as X
shows them: every link wrapped as a ``t.co`` link.

The user timeline pages as X documents: ``max_results`` 5 to 100 (default 10), ``start_time`` /
``end_time``, ``since_id`` / ``until_id``, ``pagination_token`` = the previous page's
``meta.next_token``, which is absent on the last page; only the newest 3,200 posts of an
account are served at all."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping
from datetime import UTC, datetime
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
from herald.sandbox.counting import urls, x_length
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_file, read_multipart
from herald.sandbox.paging import decode_cursor, encode_cursor, older_than

#: The user timeline serves an account's newest 3,200 posts and no more.
TIMELINE_CAP = 3200
PROBLEMS = "https://api.x.com/2/problems/"
_DUPLICATE = "You are not allowed to create a Tweet with duplicate content."


class XNetwork(SandboxNetwork):
    name = "x"
    access_ttl_s = 7200.0
    refresh_ttl_s = None  # undocumented; never expires here
    rotates_refresh = True
    reuse_revokes_family = True
    default_rate_limit = RateLimit(limit=100, window_s=900)
    default_options: ClassVar[dict[str, Any]] = {
        "max_weighted_length": 280,
        "too_long_status": 400,  # ⚠ 400 or 403
        "reject_duplicates": True,
        # Media (POST /2/media/upload/...): sizes per category, 5 MB per chunk, processing.
        "media_image_max_bytes": 5_000_000,
        "media_gif_max_bytes": 15_000_000,
        "media_video_max_bytes": 512_000_000,
        "media_chunk_max_bytes": 5 * 1024 * 1024,
        "media_ttl_s": 86_400,
        "processing_polls": 1,
        "processing_fails": False,
    }

    def new_account_id(self, seq: int) -> str:
        return str(1_400_000_000_000_000_000 + seq)

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        return _store_tweet(sb, self.name, account, text)

    def error_response(self, err: NetworkError) -> Response:
        if err.extra.get("oauth"):
            body: dict[str, Any] = {"error": err.code or "invalid_request"}
            body["error_description"] = err.message
            return JSONResponse(body, err.status, headers=err.headers)
        problem = "invalid-request" if err.code == "InvalidRequest" else err.code or "about:blank"
        body = {
            "title": err.extra.get("title", _title(err.status)),
            "detail": err.message,
            "type": problem if problem.startswith(("about:", "http")) else PROBLEMS + problem,
            "status": err.status,
        }
        return JSONResponse(
            body, err.status, headers=err.headers, media_type="application/problem+json"
        )

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(window.limit),
            "x-rate-limit-remaining": str(window.remaining),
            "x-rate-limit-reset": str(window.reset_epoch),
        }

    def rate_limited_response(self, window: RateWindow) -> Response:
        err = NetworkError(
            429,
            "Too Many Requests",
            code="about:blank",
            headers=self.rate_limit_headers(window),
            extra={"title": "Too Many Requests"},
        )
        return self.error_response(err)

    def routes(self, sb: Sandbox) -> APIRouter:
        router = APIRouter()
        self._media_routes(router, sb)
        self._content_routes(router, sb)
        self._oauth_routes(router, sb)
        return router

    def _media_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.post("/2/media/upload/initialize")
        async def initialize(request: Request) -> dict[str, Any]:
            account = _me(request)
            body = await read_json(request)
            kind = _CATEGORIES.get(str(body.get("media_category")))
            total = body.get("total_bytes")
            if kind is None or not isinstance(total, int) or total <= 0:
                raise NetworkError(400, "media_category and total_bytes are required")
            limit = int(sb.option(net, f"media_{kind}_max_bytes"))
            if total > limit:
                raise NetworkError(
                    400, f"total_bytes {total} exceeds the {limit} bytes allowed for {kind}"
                )
            ttl = float(sb.option(net, "media_ttl_s"))
            upload = sb.new_upload(
                net,
                account.account_id,
                kind,
                ttl_s=ttl,
                declared_bytes=total,
                data={"media_type": body.get("media_type"), "segments": 0},
            )
            return {
                "data": {
                    "id": upload.id,
                    "media_key": f"7_{upload.id}",
                    "expires_after_secs": int(ttl),
                }
            }

        @router.post("/2/media/upload/{media_id}/append")
        async def append(media_id: str, request: Request) -> dict[str, Any]:
            upload = _session(sb, _me(request), media_id)
            fields, files = await read_multipart(request)
            if upload.state != "uploading":
                raise NetworkError(400, "the upload is already finalized")
            if fields.get("segment_index") != str(upload.data["segments"]) or "media" not in files:
                raise NetworkError(400, "segment_index out of order or media missing")
            before = upload.received
            await absorb_file(files["media"], upload)
            if upload.received - before > int(sb.option(net, "media_chunk_max_bytes")):
                raise NetworkError(400, "a segment must be at most 5 MB")
            upload.data["segments"] += 1
            return {
                "data": {
                    "expires_at": int(upload.expires_at.timestamp()) if upload.expires_at else 0
                }
            }

        @router.post("/2/media/upload/{media_id}/finalize")
        async def finalize(media_id: str, request: Request) -> dict[str, Any]:
            upload = _session(sb, _me(request), media_id)
            if upload.received != upload.declared_bytes:
                raise NetworkError(
                    400, f"received {upload.received} of {upload.declared_bytes} bytes"
                )
            polls = int(sb.option(net, "processing_polls")) if upload.kind != "image" else 0
            upload.finish(polls, bool(sb.option(net, "processing_fails")))
            data: dict[str, Any] = {"id": upload.id, "size": upload.received}
            if upload.kind != "image":
                data["processing_info"] = _processing(upload, upload.state)
            return {"data": data}

        @router.get("/2/media/upload")
        async def status(request: Request) -> dict[str, Any]:
            account = _me(request)
            if request.query_params.get("command") != "STATUS":
                raise NetworkError(400, "command must be STATUS")
            upload = _session(sb, account, request.query_params.get("media_id", ""))
            return {
                "data": {"id": upload.id, "processing_info": _processing(upload, upload.poll())}
            }

        @router.post("/2/media/metadata")
        async def metadata(request: Request) -> dict[str, Any]:
            account = _me(request)
            body = await read_json(request)
            upload = _session(sb, account, str(body.get("id")))
            alt = (body.get("metadata") or {}).get("alt_text", {}).get("text")
            if not isinstance(alt, str) or len(alt) > 1000:
                raise NetworkError(400, "alt_text.text must be at most 1000 characters")
            upload.alt = alt
            return {"data": {"associated_metadata": True}}

    def _content_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        def me(request: Request) -> SandboxAccount:
            auth = request_auth(request)
            if auth.status is not TokenStatus.VALID or auth.account is None:
                raise NetworkError(401, "Unauthorized", extra={"title": "Unauthorized"})
            return auth.account

        @router.post("/2/tweets", status_code=201)
        async def create_tweet(request: Request) -> dict[str, Any]:
            account = me(request)
            body = await read_json(request)
            text = body.get("text")
            if (not isinstance(text, str) or not text.strip()) and not body.get("media"):
                raise NetworkError(400, "text is required", code="invalid-request")
            text = text if isinstance(text, str) else ""
            if x_length(text) > int(sb.option(net, "max_weighted_length")):
                status = int(sb.option(net, "too_long_status"))
                raise NetworkError(status, "Your Tweet text is too long.", code="invalid-request")
            uploads = _attachable(sb, account, body.get("media"))
            if sb.option(net, "reject_duplicates") and any(
                p.text == text for p in sb.posts_of(net, account.account_id)
            ):
                raise NetworkError(403, _DUPLICATE, extra={"title": "Forbidden"})
            post = _store_tweet(sb, net, account, text)
            if uploads:
                sb.attach(uploads, post)
            shown = _shown(post.text)
            return {"data": {"id": post.id, "text": shown, "edit_history_tweet_ids": [post.id]}}

        @router.get("/2/users/me")
        async def users_me(request: Request) -> dict[str, Any]:
            account = me(request)
            return {
                "data": {
                    "id": account.account_id,
                    "name": account.handle,
                    "username": account.handle,
                }
            }

        @router.get("/2/users/{user_id}/tweets")
        async def timeline(request: Request, user_id: str) -> dict[str, Any]:
            me(request)
            q = request.query_params
            limit = _int_param(request, "max_results", 10, 5, 100)
            posts = _window(sb.posts_of(net, user_id)[:TIMELINE_CAP], q)
            token = q.get("pagination_token")
            if token is not None:
                rest = older_than(posts, decode_cursor(token) or "")
                if rest is None:
                    raise NetworkError(
                        400, f"Invalid pagination_token [{token}]", code="invalid-request"
                    )
                posts = rest
            page = posts[:limit]
            data = [
                {"id": p.id, "text": _shown(p.text), "created_at": _z(p.created_at.isoformat())}
                for p in page
            ]
            meta: dict[str, Any] = {"result_count": len(data)}
            if len(posts) > limit:
                meta["next_token"] = encode_cursor(page[-1].id)
            if data:
                meta |= {"newest_id": data[0]["id"], "oldest_id": data[-1]["id"]}
                return {"data": data, "meta": meta}
            return {"meta": meta}

        @router.get("/2/tweets/{tweet_id}")
        async def get_tweet(request: Request, tweet_id: str) -> dict[str, Any]:
            me(request)
            post = sb.find_post(net, tweet_id)
            if post is None:
                return {
                    "errors": [
                        {
                            "value": tweet_id,
                            "detail": f"Could not find tweet with id: [{tweet_id}].",
                            "title": "Not Found Error",
                            "resource_type": "tweet",
                            "parameter": "id",
                            "resource_id": tweet_id,
                            "type": PROBLEMS + "resource-not-found",
                        }
                    ]
                }
            metrics = post.data.setdefault(
                "public_metrics",
                {
                    "retweet_count": 2,
                    "reply_count": 1,
                    "like_count": 5,
                    "quote_count": 0,
                    "bookmark_count": 0,
                    "impression_count": 120,
                },
            )
            shown = _shown(post.text)
            return {"data": {"id": post.id, "text": shown, "public_metrics": metrics}}

    def _oauth_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.get("/i/oauth2/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(400, "invalid authorization request", code="invalid-request")
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                challenge=q.get("code_challenge"),
                method=q.get("code_challenge_method", "plain"),
                scopes=tuple(q.get("scope", "").split()),
            )
            query = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

        @router.post("/2/oauth2/token")
        async def token(request: Request) -> dict[str, Any]:
            form = await read_form(request)
            # A public client names itself in the form; a confidential one must use Basic.
            # X answers both a missing and a wrong client the same way.
            client_id, secret = token_client(request, form)
            if not sb.client_accepted(net, client_id, secret, secret=False):
                raise _oauth(401, "unauthorized_client", "Missing valid authorization header")
            grant = form.get("grant_type")
            try:
                if grant == "authorization_code":
                    pair, _ = sb.redeem_code(
                        net,
                        form.get("code", ""),
                        redirect_uri=form.get("redirect_uri"),
                        verifier=form.get("code_verifier"),
                    )
                elif grant == "refresh_token":
                    pair = sb.refresh(net, form.get("refresh_token", ""))
                else:
                    raise _oauth(400, "unsupported_grant_type", "Unsupported grant type")
            except RefreshRefused:
                raise _oauth(
                    400, "invalid_request", "Value passed for the token was invalid."
                ) from None
            view = pair.view(sb.now())
            return {
                k: view[k]
                for k in ("token_type", "access_token", "expires_in", "scope", "refresh_token")
                if k in view
            }

        @router.post("/2/oauth2/revoke")
        async def revoke(request: Request) -> dict[str, bool]:
            form = await read_form(request)
            value = form.get("token", "")
            issued = sb.tokens.get(value)
            if issued is not None and issued.kind == "refresh":
                sb.revoke_family(issued.family)  # RFC 7009: the grant's access tokens too
            else:
                sb.revoke(value)
            return {"revoked": True}


def _shown(text: str) -> str:
    """The text as X shows it back: every link wrapped as ``https://t.co/<10 characters>``."""
    out, cursor = [], 0
    for start, end in urls(text):
        digest = hashlib.sha256(text[start:end].encode()).hexdigest()[:10]
        out += [text[cursor:start], f"https://t.co/{digest}"]
        cursor = end
    return "".join([*out, text[cursor:]])


_CATEGORIES = {"tweet_image": "image", "tweet_gif": "gif", "tweet_video": "video"}


def _me(request: Request) -> SandboxAccount:
    auth = request_auth(request)
    if auth.status is not TokenStatus.VALID or auth.account is None:
        raise NetworkError(401, "Unauthorized", extra={"title": "Unauthorized"})
    return auth.account


def _session(sb: Sandbox, account: SandboxAccount, media_id: str) -> SandboxUpload:
    upload = sb.find_upload("x", media_id)
    if upload is None or upload.account_id != account.account_id:
        raise NetworkError(400, f"Invalid media_id [{media_id}]", code="invalid-request")
    if upload.expires_at is not None and upload.expires_at <= sb.now():
        raise NetworkError(400, f"media_id [{media_id}] has expired", code="invalid-request")
    return upload


def _processing(upload: SandboxUpload, state: str) -> dict[str, Any]:
    info: dict[str, Any] = {"state": state}
    if state == "in_progress":
        info |= {"check_after_secs": 1, "progress_percent": 50}
    if state == "failed":
        info["error"] = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video"}
    return info


def _attachable(sb: Sandbox, account: SandboxAccount, media: Any) -> list[SandboxUpload]:
    """The uploads a tweet's ``media.media_ids`` names: each this account's, processed, live."""
    if media is None:
        return []
    ids = media.get("media_ids") if isinstance(media, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > 4:
        raise NetworkError(400, "media.media_ids must hold 1 to 4 ids", code="invalid-request")
    found = []
    for media_id in ids:
        upload = _session(sb, account, str(media_id))
        if upload.state != "succeeded":
            raise NetworkError(400, "Your media IDs are invalid.", code="invalid-request")
        found.append(upload)
    if len(found) > 1 and any(u.kind != "image" for u in found):
        raise NetworkError(400, "Your media IDs are invalid.", code="invalid-request")
    return found


def _store_tweet(sb: Sandbox, net: str, account: SandboxAccount, text: str) -> SandboxPost:
    post, _ = sb.create_post(net, account.account_id, text)
    post.url = f"https://x.com/{account.handle}/status/{post.id}"
    return post


def _window(posts: list[SandboxPost], q: Mapping[str, str]) -> list[SandboxPost]:
    """The timeline narrowed by ``start_time``/``end_time`` (inclusive, RFC 3339) and
    ``since_id``/``until_id`` (exclusive)."""
    if start := q.get("start_time"):
        since = _since(start)
        posts = [p for p in posts if p.created_at >= since]
    if end := q.get("end_time"):
        until = _since(end, "end_time")
        posts = [p for p in posts if p.created_at <= until]
    for name, keep in (("since_id", operator.gt), ("until_id", operator.lt)):
        raw = q.get(name)
        if raw is None:
            continue
        if not raw.isdigit():
            raise NetworkError(400, f"Invalid {name} [{raw}]", code="invalid-request")
        posts = [p for p in posts if p.id.isdigit() and keep(int(p.id), int(raw))]
    return posts


def _title(status: int) -> str:
    return {
        400: "Invalid Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
    }.get(status, "Service Unavailable" if status >= 500 else "Error")


def _oauth(status: int, code: str, description: str) -> NetworkError:
    return NetworkError(status, description, code=code, extra={"oauth": True})


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise NetworkError(
            400, f"The `{name}` query parameter value [{raw}] is not valid", code="invalid-request"
        )
    return int(raw)


def _since(value: str, name: str = "start_time") -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NetworkError(400, f"Invalid {name} [{value}]", code="invalid-request") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _z(value: str) -> str:
    return value.replace("+00:00", "Z")
