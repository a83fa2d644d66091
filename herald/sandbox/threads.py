"""Threads (Graph API) emulation: media containers, publishing, listing, insights, long-lived
token refresh and the OAuth code flow.

Containers live here with their status (``IN_PROGRESS`` for videos until
``video_processing_s`` has passed, ``FINISHED``, ``PUBLISHED``, ``EXPIRED`` once
``container_ttl_s`` passes unpublished). Errors are Graph's
``{"error":{message,type,code,error_subcode?,fbtrace_id}}``; a fault's ``code`` may set the
Graph code, otherwise it follows the HTTP status (401 → 190, 429 → 4, 503 → 2, 5xx → 1).

``GET /{user-id}/threads`` pages as Meta documents: ``since`` / ``until`` (Unix seconds),
``limit`` (default 25, at most 100: larger values are cut to 100 here ⚠), and the cursors
``before`` / ``after`` (never both) from ``paging.cursors``; ``paging.next`` is present only
while older posts remain.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    request_auth,
)
from herald.sandbox.counting import threads_length
from herald.sandbox.faults import RateWindow
from herald.sandbox.paging import decode_cursor, encode_cursor, newer_than, older_than

VERSION = "v1.0"
LONG_LIVED_S = 5_184_000
MAX_LIST_LIMIT = 100
_CODE_FOR_STATUS = {400: 100, 401: 190, 403: 10, 404: 100, 429: 4, 503: 2}


@dataclass
class Container:
    id: str
    account_id: str
    media_type: str
    text: str
    created_at: datetime
    media_url: str | None = None
    media_id: str | None = None
    children: list[str] | None = None
    carousel_item: bool = False
    fails: bool = False


class ThreadsNetwork(SandboxNetwork):
    name = "threads"
    access_ttl_s = float(LONG_LIVED_S)
    issues_refresh = False  # the long-lived access token itself is refreshed
    default_options: ClassVar[dict[str, Any]] = {
        "max_text_length": 500,
        "container_ttl_s": 86_400,
        "video_processing_s": 0,
        "refresh_min_age_s": 86_400,
        "reject_republish": True,  # ⚠ whether publishing a container twice is refused
        "throttle_http_status": 400,  # ⚠ Graph sends code 4/17 errors as 400 or 403
        "processing_fails": False,  # a video container ends in ERROR
        "max_carousel_items": 20,
    }

    def __init__(self) -> None:
        self._containers: dict[str, Container] = {}
        self._lock = threading.Lock()

    def new_account_id(self, seq: int) -> str:
        return str(17_841_400_000_000_000 + seq)

    def credential(self, request: Request) -> str | None:
        token = request.query_params.get("access_token")
        return token or super().credential(request)

    def error_response(self, err: NetworkError) -> Response:
        code = int(err.code) if err.code and err.code.isdigit() else None
        if code is None:
            code = _CODE_FOR_STATUS.get(err.status, 1 if err.status >= 500 else 100)
        error: dict[str, Any] = {
            "message": err.message,
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": secrets.token_urlsafe(12),
        }
        error.update(err.extra)
        return JSONResponse({"error": error}, err.status, headers=err.headers)

    def rate_limited_response(self, window: RateWindow) -> Response:
        return self.error_response(NetworkError(400, "Application request limit reached", code="4"))

    # -- state --------------------------------------------------------------------------------

    def status(self, sb: Sandbox, container: Container) -> str:
        if container.media_id is not None:
            return "PUBLISHED"
        age = (sb.now() - container.created_at).total_seconds()
        if age >= float(sb.option(self.name, "container_ttl_s")):
            return "EXPIRED"
        if container.media_type == "VIDEO" and age < float(
            sb.option(self.name, "video_processing_s")
        ):
            return "IN_PROGRESS"
        return "ERROR" if container.fails else "FINISHED"

    def container(self, sb: Sandbox, container_id: str) -> Container | None:
        with self._lock:
            found = self._containers.get(container_id)
        if found is None or sb.account(self.name, found.account_id) is None:
            return None  # from before a reset
        return found

    def new_container(
        self,
        sb: Sandbox,
        account: SandboxAccount,
        media_type: str,
        text: str,
        media_url: str | None = None,
    ) -> Container:
        container = Container(
            id=str(18_000_000_000_000_000 + sb.next_id()),
            account_id=account.account_id,
            media_type=media_type,
            text=text,
            created_at=sb.now(),
            media_url=media_url,
        )
        with self._lock:
            self._containers[container.id] = container
        return container

    def publish_container(
        self, sb: Sandbox, account: SandboxAccount, container: Container
    ) -> SandboxPost:
        shortcode = secrets.token_urlsafe(8)
        post, _ = sb.create_post(
            self.name,
            account.account_id,
            container.text,
            post_id=str(17_900_000_000_000_000 + sb.next_id()),
            url=f"https://www.threads.net/@{account.handle}/post/{shortcode}",
            data={
                "container_id": container.id,
                "shortcode": shortcode,
                "media_type": f"{container.media_type}_POST",
            },
        )
        container.media_id = post.id
        items = container.children or ([container.id] if container.media_url else [])
        uploads = [u for u in (sb.find_upload(self.name, i) for i in items) if u is not None]
        if uploads:
            sb.attach(uploads, post)
        return post

    def _carousel(self, sb: Sandbox, account: SandboxAccount, p: Mapping[str, Any]) -> Container:
        children = [c for c in str(p.get("children", "")).split(",") if c]
        if not 2 <= len(children) <= int(sb.option(self.name, "max_carousel_items")):
            raise NetworkError(400, "Param children must hold 2 to 20 item ids", code="100")
        for child_id in children:
            child = self.container(sb, child_id)
            if child is None or child.account_id != account.account_id or not child.carousel_item:
                raise NetworkError(400, f"Invalid carousel item: {child_id}", code="100")
            if self.status(sb, child) != "FINISHED":
                raise NetworkError(400, "The carousel item is not ready", code="9007")
        container = self.new_container(sb, account, "CAROUSEL", str(p.get("text", "")))
        container.children = children
        return container

    def seed_post(
        self, sb: Sandbox, account: SandboxAccount, text: str, options: Mapping[str, Any]
    ) -> SandboxPost:
        return self.publish_container(sb, account, self.new_container(sb, account, "TEXT", text))

    def routes(self, sb: Sandbox) -> APIRouter:  # noqa: PLR0915 - one closure per endpoint
        router = APIRouter()
        net = self.name

        def user(request: Request, user_id: str | None = None) -> SandboxAccount:
            auth = request_auth(request)
            if auth.status is TokenStatus.MISSING:
                raise NetworkError(400, "An active access token must be used", code="2500")
            if auth.status is not TokenStatus.VALID or auth.account is None:
                raise NetworkError(
                    401, "Error validating access token: Session has expired", code="190"
                )
            if user_id not in (None, "me", auth.account.account_id):
                raise NetworkError(400, f"Unsupported request for object '{user_id}'", code="100")
            return auth.account

        async def params(request: Request) -> dict[str, Any]:
            merged: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                merged.update(await read_form(request))
            return merged

        def media_view(post: SandboxPost, fields: str | None) -> dict[str, Any]:
            full = {
                "id": post.id,
                "media_type": post.data.get("media_type", "TEXT_POST"),
                "text": post.text,
                "timestamp": post.created_at.strftime("%Y-%m-%dT%H:%M:%S+0000"),
                "permalink": post.url,
                "shortcode": post.data.get("shortcode"),
            }
            wanted = (fields or "id").split(",")
            return {k: v for k, v in full.items() if k in wanted or k == "id"}

        @router.post(f"/{VERSION}/{{user_id}}/threads")
        async def create_container(request: Request, user_id: str) -> dict[str, Any]:
            account = user(request, user_id)
            p = await params(request)
            media_type = str(p.get("media_type", "TEXT")).upper()
            if media_type not in ("TEXT", "IMAGE", "VIDEO", "CAROUSEL"):
                raise NetworkError(400, "Invalid parameter: media_type", code="100")
            if media_type == "CAROUSEL":
                return {"id": self._carousel(sb, account, p).id}
            text = str(p.get("text", ""))
            if threads_length(text) > int(sb.option(net, "max_text_length")):
                raise NetworkError(
                    400, "Param text must be at most 500 characters long.", code="100"
                )
            url_field = {"IMAGE": "image_url", "VIDEO": "video_url"}.get(media_type)
            if url_field and not p.get(url_field):
                raise NetworkError(400, f"Param {url_field} is required", code="100")
            if media_type == "TEXT" and not text.strip():
                raise NetworkError(400, "Param text is required for TEXT posts", code="100")
            container = self.new_container(
                sb, account, media_type, text, str(p[url_field]) if url_field else None
            )
            if url_field:
                # Threads fetches the URL itself; the sandbox journals it as the upload.
                kind = "video" if media_type == "VIDEO" else "image"
                upload = sb.new_upload(net, account.account_id, kind, upload_id=container.id)
                upload.alt, upload.data["url"] = p.get("alt_text"), str(p[url_field])
                upload.finish(0, False)
                container.carousel_item = str(p.get("is_carousel_item")).lower() == "true"
                container.fails = media_type == "VIDEO" and bool(sb.option(net, "processing_fails"))
            return {"id": container.id}

        @router.post(f"/{VERSION}/{{user_id}}/threads_publish")
        async def publish(request: Request, user_id: str) -> dict[str, Any]:
            account = user(request, user_id)
            p = await params(request)
            container = self.container(sb, str(p.get("creation_id", "")))
            if container is None or container.account_id != account.account_id:
                raise NetworkError(
                    400,
                    "Invalid parameter: creation_id",
                    code="100",
                    extra={"error_subcode": 4279009},
                )
            status = self.status(sb, container)
            if status == "EXPIRED":
                raise NetworkError(
                    400,
                    "The media container has expired",
                    code="100",
                    extra={"error_subcode": 4279009},
                )
            if status == "IN_PROGRESS":
                raise NetworkError(400, "The media is not ready for publishing", code="9007")
            if container.media_id is not None:
                if sb.option(net, "reject_republish"):
                    raise NetworkError(400, "The media has already been published", code="100")
                return {"id": container.media_id}
            return {"id": self.publish_container(sb, account, container).id}

        @router.get(f"/{VERSION}/{{user_id}}/threads")
        async def list_threads(request: Request, user_id: str) -> dict[str, Any]:
            account = user(request, user_id)
            q = request.query_params
            posts = _between(sb.posts_of(net, account.account_id), q)
            raw = q.get("limit", "25")
            if not raw.isdigit():
                raise NetworkError(400, "Invalid parameter: limit", code="100")
            limit = min(int(raw), MAX_LIST_LIMIT) or 25
            if "before" in q and "after" in q:
                raise NetworkError(400, "Cannot specify both before and after cursors", code="100")
            if "after" in q or "before" in q:
                cursor = decode_cursor(q.get("after") or q.get("before") or "") or ""
                after = "after" in q
                rest = older_than(posts, cursor) if after else newer_than(posts, cursor)
                if rest is None:
                    raise NetworkError(400, "Invalid parameter: cursor", code="100")
                posts = rest if after else rest[-limit:]
            page, more = posts[:limit], len(posts) > limit
            body: dict[str, Any] = {"data": [media_view(p, q.get("fields")) for p in page]}
            if page:
                base = f"{str(request.base_url).rstrip('/')}/{net}{request.url.path}"
                keep = {k: v for k, v in q.items() if k not in ("after", "before")}
                cursors = {"before": encode_cursor(page[0].id), "after": encode_cursor(page[-1].id)}
                paging: dict[str, Any] = {"cursors": cursors}
                if more:
                    paging["next"] = f"{base}?{urlencode(keep | {'after': cursors['after']})}"
                if "after" in q or "before" in q:
                    back = keep | {"before": cursors["before"]}
                    paging["previous"] = f"{base}?{urlencode(back)}"
                body["paging"] = paging
            return body

        @router.get(f"/{VERSION}/{{object_id}}/insights")
        async def insights(request: Request, object_id: str) -> dict[str, Any]:
            account = user(request)
            post = sb.find_post(net, object_id)
            if post is None or post.account_id != account.account_id:
                raise NetworkError(
                    400, f"Unsupported get request. Object '{object_id}'", code="100"
                )
            numbers = post.data.setdefault(
                "insights",
                {"views": 140, "likes": 9, "replies": 2, "reposts": 1, "quotes": 0, "shares": 1},
            )
            wanted = request.query_params.get("metric", "views").split(",")
            return {
                "data": [
                    {
                        "name": m,
                        "period": "lifetime",
                        "values": [{"value": numbers[m]}],
                        "id": f"{object_id}/insights/{m}/lifetime",
                    }
                    for m in wanted
                    if m in numbers
                ]
            }

        @router.get(f"/{VERSION}/{{object_id}}")
        async def read_object(request: Request, object_id: str) -> dict[str, Any]:
            account = user(request)
            fields = request.query_params.get("fields")
            if object_id == "me":
                return {"id": account.account_id, "username": account.handle}
            container = self.container(sb, object_id)
            if container is not None and container.account_id == account.account_id:
                view: dict[str, Any] = {"id": container.id, "status": self.status(sb, container)}
                if view["status"] == "ERROR":
                    view["error_message"] = "UNKNOWN: the video could not be processed"
                return view
            post = sb.find_post(net, object_id)
            if post is None or post.account_id != account.account_id:
                raise NetworkError(
                    400, f"Unsupported get request. Object '{object_id}'", code="100"
                )
            return media_view(post, fields)

        @router.get("/refresh_access_token")
        async def refresh(request: Request) -> dict[str, Any]:
            auth = request_auth(request)
            if request.query_params.get("grant_type") != "th_refresh_token":
                raise NetworkError(400, "Invalid grant_type", code="100")
            if auth.status is not TokenStatus.VALID or auth.token is None:
                raise NetworkError(401, "Error validating access token", code="190")
            age = (sb.now() - auth.token.issued_at).total_seconds()
            if age < float(sb.option(net, "refresh_min_age_s")):
                raise NetworkError(
                    400,
                    "The access token can be refreshed 24 hours after it was issued",
                    code="100",
                )
            pair = sb.issue_tokens(
                net,
                auth.token.account_id,
                scopes=auth.token.scopes,
                family=auth.token.family,
                with_refresh=False,
            )
            return {
                "access_token": pair.access.value,
                "token_type": "bearer",
                "expires_in": LONG_LIVED_S,
            }

        @router.get("/oauth/authorize")
        async def authorize(request: Request) -> Response:
            q = request.query_params
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri or not q.get("client_id") or q.get("response_type") != "code":
                raise NetworkError(400, "Invalid authorization request", code="100")
            account = sb.pick_account(net, q.get("sandbox_account"))
            code = sb.issue_code(
                net,
                account.account_id,
                redirect_uri=redirect_uri,
                scopes=tuple(q.get("scope", "").split(",")),
            )
            return RedirectResponse(
                f"{redirect_uri}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302
            )

        @router.post("/oauth/access_token")
        async def code_for_token(request: Request) -> dict[str, Any]:
            form = await params(request)
            client_id, secret = _str(form.get("client_id")), _str(form.get("client_secret"))
            if client_id is None or secret is None:
                missing = "client_id" if client_id is None else "client_secret"
                raise NetworkError(400, f"Missing {missing} parameter.", code="101")
            if not sb.client_accepted(net, client_id, secret, secret=True):
                raise NetworkError(400, "Error validating client secret.", code="1")
            try:
                pair, account = sb.redeem_code(
                    net,
                    str(form.get("code", "")),
                    redirect_uri=form.get("redirect_uri"),
                    verifier=None,
                )
            except RefreshRefused:
                raise NetworkError(400, "Invalid verification code format.", code="100") from None
            pair.access.expires_at = sb.now() + timedelta(hours=1)  # short-lived
            return {"access_token": pair.access.value, "user_id": account.account_id}

        @router.get("/access_token")
        async def long_lived(request: Request) -> dict[str, Any]:
            auth = request_auth(request)
            q = request.query_params
            if q.get("grant_type") != "th_exchange_token":
                raise NetworkError(400, "Invalid exchange request", code="100")
            if not sb.client_secret_accepted(net, q.get("client_secret")):
                raise NetworkError(400, "Error validating client secret.", code="1")
            if auth.status is not TokenStatus.VALID or auth.token is None:
                raise NetworkError(401, "Error validating access token", code="190")
            pair = sb.issue_tokens(
                net,
                auth.token.account_id,
                scopes=auth.token.scopes,
                family=auth.token.family,
                with_refresh=False,
            )
            return {
                "access_token": pair.access.value,
                "token_type": "bearer",
                "expires_in": LONG_LIVED_S,
            }

        return router


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _between(posts: list[SandboxPost], q: Mapping[str, str]) -> list[SandboxPost]:
    """Posts from ``since`` up to ``until`` (Unix seconds; the docs also allow anything
    ``strtotime()`` reads, which the sandbox does not)."""
    for name in ("since", "until"):
        raw = q.get(name)
        if raw is None:
            continue
        if not raw.isdigit():
            raise NetworkError(400, f"Invalid parameter: {name}", code="100")
        bound = int(raw)
        posts = [
            p
            for p in posts
            if (
                p.created_at.timestamp() >= bound
                if name == "since"
                else p.created_at.timestamp() <= bound
            )
        ]
    return posts
