"""Reddit adapter.

API calls go to ``oauth.reddit.com`` with ``Authorization: bearer``; token calls go to
``www.reddit.com`` with HTTP Basic ``client_id:client_secret`` (with the sandbox, both are
``<sandbox>/reddit``). ``Account.external_id`` is the username; ``Account.settings
["subreddit"]`` the default subreddit, overridden by ``draft.settings["subreddit"]``. The
title is ``draft.settings["title"]``, or else the text's first line.

Reddit reports submission errors inside an HTTP 200 (``json.errors`` triples) — including
its per-account posting throttle, ``RATELIMIT`` "… take a break for N minutes …".

Reconciliation reads ``/user/<name>/submitted?sort=new&limit=100``, older pages by
``after=<data.after>``, for the subreddit and title; a listing reaches back 1,000 posts at
most, so a window holding more proves nothing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthExpired,
    AuthorizeRequest,
    ConfigurationError,
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
    RemotePost,
    TokenSet,
    TransientError,
    Upload,
    quoted,
)
from herald.providers.http import ProviderHTTP, client_refused, json_body, server_error
from herald.providers.lookup import Page, Seen, search_window
from herald.providers.media import MB, MediaLimits, check_kinds, expiry, refuse
from herald.providers.oauth2 import token_expiry
from herald.settings import Settings

NAME = "reddit"
MAX_GALLERY = 20
LEASE_TTL_S = 3600
_S3_LOCATION = re.compile(r"<Location>([^<]+)</Location>")
_S3_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
#: Images up to 20 MB, GIFs up to 100 MB, videos up to 1 GB and 15 minutes.
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="Reddit",
    max_bytes={"image": 20 * MB, "gif": 100 * MB, "video": 1000 * MB},
    max_duration_s=900.0,
    alt_max=180,
)
MAX_TITLE = 300
MAX_TEXT = 40_000
WWW_HOST = "https://www.reddit.com"  # token and authorize endpoints
DEFAULT_SCOPES = ("identity", "submit", "read")
DEFAULT_BACKOFF_S = 600
LISTING_PAGE = 100  # the most ``limit`` allows
LISTING_CAP = 1000  # no listing reaches further back
_WAIT = re.compile(r"(\d+)\s*(millisecond|second|minute|hour)s?", re.IGNORECASE)
_UNIT_S = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600}
_SUBREDDIT = re.compile(r"[A-Za-z0-9_]{2,21}")


def wait_seconds(message: str) -> float:
    """Seconds to wait named in a Reddit throttle message ("… for 7 minutes …")."""
    match = _WAIT.search(message)
    if not match:
        return DEFAULT_BACKOFF_S
    return min(int(match.group(1)) * _UNIT_S[match.group(2).lower()], 86_400.0)


def classify(response: httpx.Response, *, now: datetime | None = None) -> ProviderError:
    """Translate a non-2xx Reddit answer into one taxonomy error."""
    now = now or datetime.now(UTC)
    status = response.status_code
    challenge = response.headers.get("www-authenticate", "")
    body = json_body(response)
    body = body if isinstance(body, dict) else {}
    raw = body.get("message") or body.get("error")
    message = raw if isinstance(raw, str) and raw else f"HTTP {status}"
    kw: dict[str, Any] = {"provider": NAME, "http_status": status}
    if status == 429:
        try:
            seconds = float(response.headers.get("x-ratelimit-reset", DEFAULT_BACKOFF_S))
        except ValueError:
            seconds = DEFAULT_BACKOFF_S
        seconds = min(max(seconds, 0.0), 86_400.0)
        return RateLimited(message, reset_at=now + timedelta(seconds=seconds), **kw)
    if status == 401:
        return AuthExpired("Reddit refused the access token", provider_code="invalid_token", **kw)
    if status == 403 and "insufficient_scope" in challenge:
        return ReauthRequired(
            "the Reddit grant lacks a needed scope", provider_code="insufficient_scope", **kw
        )
    if status >= 500:
        return server_error(NAME, response, idempotent=False, message=message)
    return PermanentError(quoted(message), **kw)


def submission_error(errors: list[Any], *, now: datetime | None = None) -> ProviderError:
    """Translate ``json.errors`` (``[[CODE, message, field], …]``) from a 200 answer."""
    now = now or datetime.now(UTC)
    first = errors[0] if errors else None
    triple = first if isinstance(first, list) else []
    code = triple[0] if triple and isinstance(triple[0], str) else "UNKNOWN"
    message = triple[1] if len(triple) > 1 and isinstance(triple[1], str) else code
    field = triple[2] if len(triple) > 2 and isinstance(triple[2], str) else None
    text = f"{code}: {message}" + (f" (field {field})" if field else "")
    if code == "RATELIMIT":
        reset_at = now + timedelta(seconds=wait_seconds(message))
        return RateLimited(
            quoted(text), reset_at=reset_at, provider=NAME, http_status=200, provider_code=code
        )
    return PermanentError(quoted(text), provider=NAME, http_status=200, provider_code=code)


def _title(draft: PostDraft) -> str:
    title = draft.settings.get("title")
    if isinstance(title, str):
        return title.strip()
    return next((line.strip() for line in draft.text.splitlines() if line.strip()), "")


def _subreddit(draft: PostDraft, account: Account) -> str:
    raw = draft.settings.get("subreddit") or account.settings.get("subreddit") or ""
    name = str(raw).strip()
    return name[3:] if name.lower().startswith("r/") else name


def _created(raw: Any) -> datetime | None:
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _seen(post: dict[str, Any], subreddit: str, title: str) -> Seen:
    created = _created(post.get("created_utc"))
    post_id = post.get("id")
    if (
        str(post.get("subreddit", "")).lower() != subreddit
        or post.get("title") != title
        or not isinstance(post_id, str)
    ):
        return Seen(created)
    permalink = post.get("permalink")
    url = f"https://www.reddit.com{permalink}" if isinstance(permalink, str) else None
    selftext = post.get("selftext")
    return Seen(
        created, RemotePost(post_id, url, selftext if isinstance(selftext, str) else "", created)
    )


class RedditProvider:
    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "none"
    refreshes_tokens: ClassVar[bool] = True
    refresh_client_fields: ClassVar[tuple[str, ...]] = ("client_id", "client_secret")

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = settings.provider_base_url(NAME)
        self._token_host = (
            base
            if settings.sandbox_url
            else settings.provider_base_urls.get("reddit_auth", WWW_HOST)
        ).rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._max_pages = settings.reconcile_max_pages
        self._http = ProviderHTTP(NAME, base, settings, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _auth(self, tokens: TokenSet) -> dict[str, str]:
        return {"Authorization": f"bearer {tokens.access_token}"}

    # ------------------------------------------------------------------ publishing

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not _SUBREDDIT.fullmatch(_subreddit(draft, account)):
            raise ContentInvalid(
                "no valid subreddit (settings.subreddit)", rule="reddit.subreddit", provider=NAME
            )
        title = _title(draft)
        if not title:
            raise ContentInvalid(
                "a Reddit post needs a title", rule="reddit.title_required", provider=NAME
            )
        if len(title) > MAX_TITLE:
            raise ContentInvalid(
                f"title is {len(title)} characters; Reddit allows {MAX_TITLE}",
                rule="reddit.max_title_length",
                provider=NAME,
            )
        if len(draft.text) > MAX_TEXT:
            raise ContentInvalid(
                f"text is {len(draft.text)} characters; Reddit allows {MAX_TEXT}",
                rule="reddit.max_length",
                provider=NAME,
            )
        if len(draft.media) > MAX_GALLERY:
            raise refuse(MEDIA_LIMITS, "max_media", f"a gallery holds up to {MAX_GALLERY} images")
        check_kinds(MEDIA_LIMITS, draft)
        if len(draft.media) > 1 and any(m.kind != "image" for m in draft.media):
            raise refuse(MEDIA_LIMITS, "media_count", "a gallery holds images only")
        if len(draft.media) > 1 and draft.settings.get("kind") == "link":
            raise refuse(MEDIA_LIMITS, "media_count", "a link post links one media item")

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        form: dict[str, str] = {
            "api_type": "json",
            "sr": _subreddit(draft, account),
            "title": _title(draft),
            "resubmit": "true",
            "sendreplies": "true",
        }
        if len(draft.media) > 1:
            return self._gallery(draft, form, tokens)
        if draft.media and draft.settings.get("kind") == "link":
            form.update(kind="link", url=draft.media[0].url)
        elif draft.media:
            # Image, GIF (an image post) or video, from an uploaded asset.
            asset = self._asset(draft, 0, tokens)
            kind = "video" if draft.media[0].kind == "video" else "image"
            form.update(kind=kind, url=asset["url"], text=draft.text)
        else:
            form.update(kind="self", text=draft.text)
        for flag in ("nsfw", "spoiler"):
            if draft.settings.get(flag):
                form[flag] = "true"
        if isinstance(draft.settings.get("flair_id"), str):
            form["flair_id"] = draft.settings["flair_id"]
        response = self._http.request("POST", "/api/submit", data=form, headers=self._auth(tokens))
        if not response.is_success:
            raise classify(response)
        body = json_body(response)
        inner = body.get("json") if isinstance(body, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        errors = inner.get("errors")
        if isinstance(errors, list) and errors:
            raise submission_error(errors)
        data = inner.get("data")
        data = data if isinstance(data, dict) else {}
        post_id = data.get("id")
        if not isinstance(post_id, str) or not post_id:
            raise AmbiguousOutcome(
                "Reddit answered 200 without the submission's id",
                provider=NAME,
                http_status=response.status_code,
            )
        url = data.get("url")
        return PublishResult(post_id, url if isinstance(url, str) else None)

    # ------------------------------------------------------------------ media

    def _asset(self, draft: PostDraft, index: int, tokens: TokenSet) -> dict[str, str]:
        """Item ``index`` as an uploaded asset (its id and URL): reused, or leased and
        uploaded now through ``/api/media/asset.json`` and the lease's storage form."""
        found = draft.uploads.reuse(NAME, index)
        if found is not None:
            return dict(json.loads(found.media_id))
        file = draft.media[index].local(NAME)
        response = self._http.request(
            "POST",
            "/api/media/asset.json",
            data={"filepath": file.filename, "mimetype": file.mime},
            headers=self._auth(tokens),
            idempotent=True,  # a lease publishes nothing
        )
        if not response.is_success:
            raise classify(response)
        body = json_body(response)
        args = body.get("args") if isinstance(body, dict) else None
        asset = body.get("asset") if isinstance(body, dict) else None
        if not isinstance(args, dict) or not isinstance(asset, dict):
            raise TransientError("Reddit gave no upload lease", provider=NAME)
        action = str(args.get("action", ""))
        action = "https:" + action if action.startswith("//") else action
        fields = {
            str(f.get("name")): str(f.get("value"))
            for f in args.get("fields") or []
            if isinstance(f, dict)
        }
        with open(file.path, "rb") as handle:
            # The storage form takes the lease's fields and no bearer token.
            stored = self._http.request(
                "POST",
                action,
                data=fields,
                files={"file": (file.filename, handle, file.mime)},
                idempotent=True,
            )
        if stored.status_code not in (200, 201, 204):
            detail = _S3_MESSAGE.search(stored.text)
            raise (PermanentError if stored.status_code < 500 else TransientError)(
                f"Reddit's media storage refused the upload: "
                f"{detail.group(1) if detail else stored.status_code}",
                provider=NAME,
                http_status=stored.status_code,
            )
        location = _S3_LOCATION.search(stored.text)
        url = location.group(1) if location else f"{action}/{fields.get('key', '')}"
        value = {"asset_id": str(asset.get("asset_id")), "url": url}
        draft.uploads.record(
            NAME, index, Upload(json.dumps(value), expiry(LEASE_TTL_S, margin=0.5))
        )
        return value

    def _gallery(self, draft: PostDraft, form: dict[str, str], tokens: TokenSet) -> PublishResult:
        items = [
            {
                "media_id": self._asset(draft, index, tokens)["asset_id"],
                "caption": media.alt_text or "",
                "outbound_url": "",
            }
            for index, media in enumerate(draft.media)
        ]
        body = {
            "api_type": "json",
            "sr": form["sr"],
            "title": form["title"],
            "items": items,
            "sendreplies": True,
            "nsfw": bool(draft.settings.get("nsfw")),
            "spoiler": bool(draft.settings.get("spoiler")),
        }
        response = self._http.request(
            "POST", "/api/submit_gallery_post.json", json=body, headers=self._auth(tokens)
        )
        if not response.is_success:
            raise classify(response)
        answer = json_body(response)
        inner = answer.get("json") if isinstance(answer, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        if isinstance(inner.get("errors"), list) and inner["errors"]:
            raise submission_error(inner["errors"])
        found = inner.get("data")
        data: dict[str, Any] = found if isinstance(found, dict) else {}
        post_id = str(data.get("id") or "").removeprefix("t3_")
        if not post_id:
            raise AmbiguousOutcome(
                "Reddit answered without the gallery's id", provider=NAME, http_status=200
            )
        url = data.get("url")
        return PublishResult(post_id, url if isinstance(url, str) else None)

    # ------------------------------------------------------------------ tokens

    def revoke(self, tokens: TokenSet) -> None:
        """Revoke the grant (``POST /api/v1/revoke_token``): the refresh token, which takes its
        access tokens with it, or the access token when there is none."""
        token = tokens.refresh_token or tokens.access_token
        hint = "refresh_token" if tokens.refresh_token else "access_token"
        response = self._http.request(
            "POST",
            f"{self._token_host}/api/v1/revoke_token",
            data={"token": token, "token_type_hint": hint},
            auth=(self._client_id, self._client_secret),
            idempotent=True,
        )
        if not response.is_success:
            raise PermanentError(
                "Reddit did not revoke the token", provider=NAME, http_status=response.status_code
            )

    def _token_call(self, form: dict[str, str], *, repeatable: bool) -> dict[str, Any]:
        """``repeatable``: a refresh (Reddit's refresh tokens do not rotate, so asking again is
        safe); a code exchange is not (the code is single use)."""
        response = self._http.request(
            "POST",
            f"{self._token_host}/api/v1/access_token",
            data=form,
            auth=(self._client_id, self._client_secret),
            idempotent=repeatable,
        )
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        error = body.get("error")
        # Checked first: Reddit answers a bad Basic client with 401, a dead grant with 400.
        if client_refused(response.status_code, error):
            raise ConfigurationError(
                "Reddit refused Herald's client credentials",
                provider=NAME,
                http_status=response.status_code,
                provider_code="invalid_client",
            )
        if error == "invalid_grant" or response.status_code == 400:
            raise ReauthRequired(
                "Reddit refused the refresh token",
                provider=NAME,
                http_status=response.status_code,
                provider_code="invalid_grant",
            )
        if not response.is_success:
            raise classify(response)
        if not isinstance(body.get("access_token"), str):
            cls = TransientError if repeatable else AmbiguousOutcome
            raise cls(
                "Reddit's token answer had no access token",
                provider=NAME,
                http_status=response.status_code,
            )
        return body

    @staticmethod
    def _token_set(body: dict[str, Any], refresh_token: str | None) -> TokenSet:
        expires = token_expiry(body.get("expires_in"))
        new_refresh = body.get("refresh_token")
        scope = body.get("scope")
        return TokenSet(
            access_token=body["access_token"],
            refresh_token=new_refresh if isinstance(new_refresh, str) else refresh_token,
            expires_at=expires,
            scopes=tuple(scope.split()) if isinstance(scope, str) else DEFAULT_SCOPES,
        )

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise ReauthRequired("this Reddit connection has no refresh token", provider=NAME)
        body = self._token_call(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
            repeatable=True,
        )
        return self._token_set(body, tokens.refresh_token)

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        query = urlencode(
            {
                "client_id": self._client_id,
                "response_type": "code",
                "state": state,
                "redirect_uri": redirect_uri,
                "duration": "permanent",
                "scope": " ".join(scopes or DEFAULT_SCOPES),
            }
        )
        return AuthorizeRequest(url=f"{self._token_host}/api/v1/authorize?{query}", state=state)

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        body = self._token_call(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            repeatable=False,
        )
        tokens = self._token_set(body, None)
        me = self._read("/api/v1/me", tokens)
        name = me.get("name") if isinstance(me, dict) else None
        if not isinstance(name, str) or not name:
            raise TransientError("Reddit did not say who the user is", provider=NAME)
        return tokens, Account(external_id=name, handle=name)

    # ------------------------------------------------------------------ reading back

    def _read(self, path: str, tokens: TokenSet, **params: Any) -> Any:
        response = self._http.request("GET", path, params=params, headers=self._auth(tokens))
        if not response.is_success:
            raise classify(response)  # 5xx on a read is already a TransientError
        return json_body(response)

    @staticmethod
    def _children(listing: Any) -> list[dict[str, Any]]:
        data = listing.get("data") if isinstance(listing, dict) else None
        children = data.get("children") if isinstance(data, dict) else None
        out: list[dict[str, Any]] = []
        for child in children if isinstance(children, list) else []:
            inner = child.get("data") if isinstance(child, dict) else None
            if isinstance(inner, dict):
                out.append(inner)
        return out

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        subreddit, title = _subreddit(draft, account).lower(), _title(draft)

        def page(after: str | None) -> Page:
            params: dict[str, Any] = {"sort": "new", "limit": LISTING_PAGE}
            if after is not None:
                params["after"] = after
            listing = self._read(f"/user/{account.external_id}/submitted", tokens, **params)
            data = listing.get("data") if isinstance(listing, dict) else None
            if not isinstance(data, dict) or not isinstance(data.get("children"), list):
                raise TransientError("unreadable listing from Reddit", provider=NAME)
            older = data.get("after")
            seen = [_seen(post, subreddit, title) for post in self._children(listing)]
            return Page(seen, older if isinstance(older, str) and older else None)

        return search_window(
            page,
            since=since,
            max_pages=self._max_pages,
            network="Reddit",
            serves_at_most=LISTING_CAP,
        )

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        posts = self._children(self._read("/api/info", tokens, id=f"t3_{external_id}"))
        if not posts:
            raise PermanentError(f"submission {external_id} not found", provider=NAME)
        post = posts[0]

        def count(key: str) -> int:
            value = post.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return PostMetrics(
            likes=count("score"),
            reposts=count("num_crossposts"),
            replies=count("num_comments"),
            impressions=None,
            raw={k: post.get(k) for k in ("score", "ups", "upvote_ratio", "num_comments")},
        )
