"""Bluesky (AT Protocol PDS) emulation: app-password sessions with rotating refresh JWTs
(2 h grace), createRecord with client-chosen TID rkeys, getRecord, listRecords, getPosts.
Errors are XRPC ``{"error": <Name>, "message"}``; an expired access token is a 400
``ExpiredToken``; rate limits use ``RateLimit-*`` headers with an epoch reset.

``listRecords`` pages as the PDS does: ``limit`` 1 to 100 (default 50), records in record-key
order (descending; ascending with ``reverse=true``), and a ``cursor`` (the last record key)
with every non-empty page."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from herald.sandbox.core import (
    NetworkError,
    RefreshRefused,
    Sandbox,
    SandboxAccount,
    SandboxNetwork,
    SandboxPost,
    TokenStatus,
    read_json,
    request_auth,
)
from herald.sandbox.counting import graphemes, utf8_bytes
from herald.sandbox.faults import RateLimit, RateWindow
from herald.sandbox.media import SandboxUpload, absorb_body

COLLECTION = "app.bsky.feed.post"
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_NAMES = {
    400: "InvalidRequest",
    401: "AuthMissing",
    403: "Forbidden",
    404: "NotFound",
    413: "PayloadTooLarge",
    500: "InternalServerError",
    502: "UpstreamFailure",
    503: "NotEnoughResources",
    504: "UpstreamTimeout",
}


class BlueskyNetwork(SandboxNetwork):
    name = "bluesky"
    access_ttl_s = 7200.0
    refresh_ttl_s = 90 * 86400.0
    rotates_refresh = True
    reuse_revokes_family = False
    refresh_grace_s = 7200.0
    default_rate_limit = RateLimit(limit=3000, window_s=300)
    default_options: ClassVar[dict[str, Any]] = {
        "max_graphemes": 300,
        "max_bytes": 3000,
        "rkey_conflict_status": 400,  # ⚠ the PDS's status for a taken rkey is unconfirmed
        # Blobs: the lexicons' maxSize (images 1,000,000; video 100,000,000); a blob no
        # record references is garbage-collected after blob_ttl_s.
        "image_max_bytes": 1_000_000,
        "video_max_bytes": 100_000_000,
        "blob_ttl_s": 3600,
    }

    def new_account_id(self, seq: int) -> str:
        digest = hashlib.sha256(str(seq).encode()).hexdigest()
        return "did:plc:" + "".join(c if c.isalpha() else "abcdefghij"[int(c)] for c in digest[:24])

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        record = {"$type": COLLECTION, "text": text, "createdAt": _z(sb.now().isoformat())}
        return _store_record(
            sb, self.name, account, rkey=_tid(sb.next_id()), record=record, text=text
        )

    def error_response(self, err: NetworkError) -> Response:
        name = err.code if err.code and err.code != "invalid_request" else None
        body = {
            "error": name or _NAMES.get(err.status, "InternalServerError"),
            "message": err.message,
        }
        return JSONResponse(body, err.status, headers=err.headers)

    def rate_limit_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(window.limit),
            "RateLimit-Remaining": str(window.remaining),
            "RateLimit-Reset": str(window.reset_epoch),
            "RateLimit-Policy": f"{window.limit};w={window.window_s}",
        }

    def rate_limited_response(self, window: RateWindow) -> Response:
        err = NetworkError(
            429,
            "Rate Limit Exceeded",
            code="RateLimitExceeded",
            headers=self.rate_limit_headers(window),
        )
        return self.error_response(err)

    def routes(self, sb: Sandbox) -> APIRouter:
        router = APIRouter(prefix="/xrpc")
        self._session_routes(router, sb)
        self._repo_routes(router, sb)
        return router

    def _session_routes(self, router: APIRouter, sb: Sandbox) -> None:
        net = self.name

        @router.post("/com.atproto.server.createSession")
        async def create_session(request: Request) -> dict[str, Any]:
            body = await read_json(request)
            ident, password = body.get("identifier"), body.get("password")
            if not isinstance(ident, str) or not isinstance(password, str):
                raise NetworkError(400, "Input must have the properties identifier and password")
            account = sb.find_account(net, handle=ident) or sb.account(net, ident)
            if account is None or account.password is None or account.password != password:
                raise NetworkError(
                    401, "Invalid identifier or password", code="AuthenticationRequired"
                )
            return _session(sb, account, sb.issue_tokens(net, account.account_id).view(sb.now()))

        @router.post("/com.atproto.server.refreshSession")
        async def refresh_session(request: Request) -> dict[str, Any]:
            token = self.credential(request)
            if token is None:
                raise NetworkError(401, "Authentication Required", code="AuthMissing")
            try:
                pair = sb.refresh(net, token)
            except RefreshRefused as refused:
                if refused.reason == "unknown":
                    raise NetworkError(
                        400, "Token could not be verified", code="InvalidToken"
                    ) from None
                message = (
                    "Token has expired"
                    if refused.reason == "expired"
                    else ("Token has been revoked")
                )
                raise NetworkError(400, message, code="ExpiredToken") from None
            account = sb.account(net, pair.access.account_id)
            assert account is not None
            return _session(sb, account, pair.view(sb.now()))

    def _repo_routes(self, router: APIRouter, sb: Sandbox) -> None:  # noqa: PLR0915
        net = self.name

        @router.post("/com.atproto.repo.uploadBlob")
        async def upload_blob(request: Request) -> dict[str, Any]:
            account = _me(request)
            mime = request.headers.get("content-type", "")
            kind = "video" if mime.startswith("video/") else "image"
            upload = sb.new_upload(
                net, account.account_id, kind, ttl_s=float(sb.option(net, "blob_ttl_s"))
            )
            limit = int(sb.option(net, "video_max_bytes" if kind == "video" else "image_max_bytes"))
            if not await absorb_body(request, upload, limit):
                del sb.uploads[upload.id]
                raise NetworkError(
                    413,
                    f"This file is too large. It is over {limit} bytes",
                    code="BlobTooLarge",
                )
            with sb._lock:  # content-addressed: the id is the bytes' hash
                del sb.uploads[upload.id]
                upload.id = "bafkrei" + upload.sha256[:52]
                sb.uploads[upload.id] = upload
            upload.finish(0, False)
            upload.data["mime"] = mime
            return {
                "blob": {
                    "$type": "blob",
                    "ref": {"$link": upload.id},
                    "mimeType": mime,
                    "size": upload.received,
                }
            }

        @router.post("/com.atproto.repo.createRecord")
        async def create_record(request: Request) -> dict[str, Any]:
            account = _me(request)
            body = await read_json(request)
            if body.get("repo") not in (account.account_id, account.handle):
                raise NetworkError(400, "Could not find repo", code="InvalidRequest")
            if body.get("collection") != COLLECTION:
                raise NetworkError(400, "Unsupported collection", code="InvalidRequest")
            record = body.get("record")
            text = _checked_record(sb, net, record)
            rkey = body.get("rkey")
            if rkey is None:
                rkey = _tid(sb.next_id())
            if not isinstance(rkey, str) or not _TID.match(rkey):
                raise NetworkError(400, "Invalid record key", code="InvalidRequest")
            uri = f"at://{account.account_id}/{COLLECTION}/{rkey}"
            if sb.find_post(net, uri) is not None:
                status = int(sb.option(net, "rkey_conflict_status"))
                raise NetworkError(status, "Record already exists at that key")
            assert isinstance(record, dict)
            blobs = _embedded_blobs(sb, account, record.get("embed"))
            post = _store_record(sb, net, account, rkey=rkey, record=record, text=text)
            if blobs:
                sb.attach(blobs, post)
            cid = _cid(post.id)
            return {
                "uri": post.id,
                "cid": cid,
                "commit": {"cid": cid, "rev": rkey},
                "validationStatus": "valid",
            }

        @router.get("/com.atproto.repo.getRecord")
        async def get_record(request: Request, repo: str, collection: str, rkey: str) -> Any:
            _me(request)
            account = sb.account(net, repo) or sb.find_account(net, handle=repo)
            uri = f"at://{account.account_id if account else repo}/{collection}/{rkey}"
            post = sb.find_post(net, uri)
            if post is None:
                raise NetworkError(400, f"Could not locate record: {uri}", code="RecordNotFound")
            return _record_view(post)

        @router.get("/com.atproto.repo.listRecords")
        async def list_records(
            request: Request,
            *,
            repo: str,
            collection: str,
            limit: int = 50,
            cursor: str | None = None,
            reverse: bool = False,
        ) -> dict[str, Any]:
            _me(request)
            account = sb.account(net, repo) or sb.find_account(net, handle=repo)
            if account is None or not 1 <= limit <= 100:
                raise NetworkError(400, "Could not find repo or bad limit", code="InvalidRequest")
            posts = [
                p for p in sb.posts_of(net, account.account_id) if p.id.split("/")[-2] == collection
            ]
            posts.sort(key=_rkey, reverse=not reverse)
            if cursor is not None:  # the page after the cursor's key, in the listing's order
                posts = [p for p in posts if (_rkey(p) > cursor if reverse else _rkey(p) < cursor)]
            page = posts[:limit]
            out: dict[str, Any] = {"records": [_record_view(p) for p in page]}
            if page:
                out["cursor"] = _rkey(page[-1])
            return out

        @router.get("/app.bsky.feed.getPosts")
        async def get_posts(request: Request) -> dict[str, Any]:
            _me(request)
            found = [sb.find_post(net, uri) for uri in request.query_params.getlist("uris")]
            return {"posts": [_post_view(sb, p) for p in found if p is not None]}


def _me(request: Request) -> SandboxAccount:
    auth = request_auth(request)
    if auth.status is TokenStatus.VALID and auth.account is not None:
        return auth.account
    if auth.status is TokenStatus.MISSING:
        raise NetworkError(401, "Authentication Required", code="AuthMissing")
    if auth.status is TokenStatus.EXPIRED:
        raise NetworkError(400, "Token has expired", code="ExpiredToken")
    if auth.status is TokenStatus.REVOKED:
        raise NetworkError(400, "Token has been revoked", code="ExpiredToken")
    raise NetworkError(400, "Token could not be verified", code="InvalidToken")


def _embedded_blobs(sb: Sandbox, account: SandboxAccount, embed: Any) -> list[SandboxUpload]:
    """The uploads an images or video embed references: each uploaded by this account and not
    yet collected; alt text is taken from the embed."""
    if not isinstance(embed, dict):
        return []
    prefix = f"Invalid {COLLECTION} record: "
    kind = embed.get("$type")
    if kind == "app.bsky.embed.images":
        items = embed.get("images")
        if not isinstance(items, list) or not 1 <= len(items) <= 4:
            raise NetworkError(400, prefix + "Record/embed/images must have 1 to 4 items")
        pairs = [(i.get("image"), i.get("alt")) for i in items if isinstance(i, dict)]
        if len(pairs) != len(items) or any(not isinstance(alt, str) for _, alt in pairs):
            raise NetworkError(400, prefix + 'Record/embed/images must have the property "alt"')
    elif kind == "app.bsky.embed.video":
        pairs = [(embed.get("video"), embed.get("alt"))]
    else:
        return []
    found = []
    for blob, alt in pairs:
        ref = blob.get("ref") if isinstance(blob, dict) else None
        cid = ref.get("$link") if isinstance(ref, dict) else None
        upload = sb.find_upload("bluesky", str(cid))
        live = upload is not None and (upload.expires_at is None or upload.expires_at > sb.now())
        if upload is None or not live or upload.account_id != account.account_id:
            raise NetworkError(400, f"Could not find blob: {cid}", code="BlobNotFound")
        upload.alt = alt if isinstance(alt, str) else None
        upload.data["aspectRatio"] = embed.get("aspectRatio") or next(
            (i.get("aspectRatio") for i in embed.get("images", []) if i.get("image") is blob), None
        )
        found.append(upload)
    return found


def _checked_record(sb: Sandbox, net: str, record: Any) -> str:
    prefix = f"Invalid {COLLECTION} record: "
    if not isinstance(record, dict) or record.get("$type") != COLLECTION:
        raise NetworkError(400, prefix + "Record/$type must be " + COLLECTION)
    text = record.get("text")
    if not isinstance(text, str):
        raise NetworkError(400, prefix + 'Record must have the property "text"')
    if not isinstance(record.get("createdAt"), str):
        raise NetworkError(400, prefix + 'Record must have the property "createdAt"')
    if graphemes(text) > int(sb.option(net, "max_graphemes")):
        raise NetworkError(400, prefix + "Record/text must not be longer than 300 graphemes")
    size = utf8_bytes(text)
    if size > int(sb.option(net, "max_bytes")):
        raise NetworkError(400, prefix + "Record/text must not be longer than 3000 characters")
    for facet in record.get("facets") or []:
        index = facet.get("index") if isinstance(facet, dict) else None
        start = index.get("byteStart") if isinstance(index, dict) else None
        end = index.get("byteEnd") if isinstance(index, dict) else None
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= size):
            raise NetworkError(400, prefix + "Record/facets has an invalid byte range")
    return text


def _store_record(
    sb: Sandbox,
    net: str,
    account: SandboxAccount,
    *,
    rkey: str,
    record: dict[str, Any],
    text: str,
) -> SandboxPost:
    post, _ = sb.create_post(
        net,
        account.account_id,
        text,
        post_id=f"at://{account.account_id}/{COLLECTION}/{rkey}",
        url=f"https://bsky.app/profile/{account.handle}/post/{rkey}",
        data={"record": record, "rkey": rkey},
    )
    return post


def _rkey(post: SandboxPost) -> str:
    return str(post.data.get("rkey", ""))


def _z(value: str) -> str:
    return value.replace("+00:00", "Z")


def _tid(seq: int) -> str:
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    value = (1_750_000_000_000_000 + seq) << 10
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def _cid(uri: str) -> str:
    return "bafyrei" + hashlib.sha256(uri.encode()).hexdigest()[:52]


def _session(sb: Sandbox, account: SandboxAccount, tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "accessJwt": tokens["access_token"],
        "refreshJwt": tokens.get("refresh_token"),
        "handle": account.handle,
        "did": account.account_id,
        "active": True,
    }


def _record_view(post: SandboxPost) -> dict[str, Any]:
    return {"uri": post.id, "cid": _cid(post.id), "value": post.data.get("record", {})}


def _post_view(sb: Sandbox, post: SandboxPost) -> dict[str, Any]:
    account = sb.account(post.network, post.account_id)
    return {
        "uri": post.id,
        "cid": _cid(post.id),
        "author": {"did": post.account_id, "handle": account.handle if account else ""},
        "record": post.data.get("record", {}),
        "likeCount": 4,
        "repostCount": 2,
        "replyCount": 1,
        "quoteCount": 0,
        "indexedAt": post.created_at.isoformat().replace("+00:00", "Z"),
    }
