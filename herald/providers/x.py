"""X (Twitter API v2) adapter.

Publishes with ``POST /2/tweets``; OAuth 2.0 authorization code with PKCE (S256); refresh
tokens are single use, so every refresh returns a new one that the caller must store before
anything else. X has no idempotency key: a lost answer to a publish is ambiguous, and
:meth:`XProvider.find_post` reconciles by reading the account's timeline
(``GET /2/users/:id/tweets`` with ``start_time``, 100 per page, ``pagination_token`` =
``meta.next_token``) for the same text, links compared as links (X shows them as ``t.co``).
X serves only an account's newest 3,200 posts, so a window holding more proves nothing.

Error mapping (:func:`classify`): 429 → RateLimited at ``x-rate-limit-reset`` (epoch s);
401 → AuthExpired; other 4xx (403 duplicate, 400 invalid) → PermanentError; 503 →
TransientError; other 5xx → AmbiguousOutcome on a publish, TransientError on a read. On the
token endpoint a 400/401 means the grant is dead → ReauthRequired.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from herald.providers.base import (
    Absent,
    Account,
    AmbiguousOutcome,
    AuthorizeRequest,
    ContentInvalid,
    Idempotency,
    LocalFile,
    Lookup,
    Media,
    PermanentError,
    PostDraft,
    PostMetrics,
    ProviderError,
    PublishResult,
    ReauthRequired,
    RemotePost,
    TokenSet,
    TransientError,
    Unknown,
    Upload,
)
from herald.providers.http import ProviderHTTP, error_for_status, json_body
from herald.providers.lookup import Page, Seen, search_window
from herald.providers.media import (
    MB,
    MediaLimits,
    check_kinds,
    expiry,
    one_video_alone,
    wait_processed,
)
from herald.providers.oauth2 import pkce_pair, token_expiry
from herald.providers.text import find_urls, x_weighted_length
from herald.settings import Settings

NAME = "x"
AUTHORIZE_URL = "https://x.com/i/oauth2/authorize"
MAX_WEIGHTED_LENGTH = 280
DEFAULT_SCOPES = ("tweet.read", "tweet.write", "users.read", "offline.access")
DEFAULT_RESET = timedelta(minutes=15)
MAX_IMAGES = 4
CHUNK_BYTES = 1024 * 1024  # APPEND takes segments of at most 5 MB; small ones keep memory flat
TIMELINE_PAGE = 100  # the most max_results allows
TIMELINE_CAP = 3200  # the user timeline serves no older posts
# Something X may auto-link although it has no scheme or "www." (``example.com``).
_BARE_DOMAIN = re.compile(r"(?i)\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="X",
    max_bytes={"image": 5 * MB, "gif": 15 * MB, "video": 512 * MB},
    min_duration_s=0.5,
    max_duration_s=140.0,
    alt_max=1000,
)


def comparable(text: str) -> str:
    """The text as reconciliation compares it: NFC, trimmed, every link reduced to a marker,
    since X shows each link back wrapped as ``https://t.co/…``."""
    return _without_links(unicodedata.normalize("NFC", text).strip())


def _without_links(text: str) -> str:
    out, cursor = [], 0
    for span in find_urls(text):
        out += [text[cursor : span.start], "\x00link"]
        cursor = span.end
    return "".join([*out, text[cursor:]])


def _text(value: Any, limit: int = 300) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _message(body: Any, status: int) -> str:
    if isinstance(body, Mapping):
        for key in ("detail", "error_description", "title", "error"):
            if found := _text(body.get(key)):
                return found
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, Mapping) and (
            found := _text(first.get("message") or first.get("detail"))
        ):
            return found
    return f"HTTP {status} from X"


def _reset_at(headers: Mapping[str, str], now: datetime) -> datetime:
    raw = headers.get("x-rate-limit-reset", "")
    try:
        epoch = float(raw)
        return datetime.fromtimestamp(epoch, UTC) if 0 < epoch < 1e11 else now + DEFAULT_RESET
    except ValueError:
        return now + DEFAULT_RESET


def classify(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    idempotent: bool,
    token_endpoint: bool = False,
    now: datetime | None = None,
) -> ProviderError:
    """The one taxonomy error for a non-success answer from X."""
    now = now or datetime.now(UTC)
    message = _message(body, status)
    code = None
    if isinstance(body, Mapping):
        code = _text(body.get("type") or body.get("error"), 120)
    return error_for_status(
        status,
        message,
        provider=NAME,
        idempotent=idempotent,
        reset_at=_reset_at(headers, now),
        token_endpoint=token_endpoint,
        provider_code=code,
    )


def _error(response: httpx.Response, *, idempotent: bool, token: bool = False) -> ProviderError:
    return classify(
        response.status_code,
        response.headers,
        json_body(response),
        idempotent=idempotent,
        token_endpoint=token,
    )


def _data(response: httpx.Response, *, idempotent: bool) -> dict[str, Any]:
    """``data`` of a 2xx answer, or the taxonomy error for a malformed one."""
    body = json_body(response)
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        return data
    if idempotent and isinstance(body, dict) and isinstance(body.get("errors"), list):
        # A read answered with errors only (the post does not exist). A write answered 2xx
        # without its data may still have been applied: that is ambiguous, below.
        raise PermanentError(
            _message(body, response.status_code), provider=NAME, http_status=response.status_code
        )
    cls = TransientError if idempotent else AmbiguousOutcome
    raise cls("unreadable answer from X", provider=NAME, http_status=response.status_code)


class XProvider:
    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "none"
    refreshes_tokens: ClassVar[bool] = True
    # A public client sends only its id; a confidential one adds Basic.
    refresh_client_fields: ClassVar[tuple[str, ...]] = ("client_id",)

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.BaseTransport | None = None,
        max_weighted_length: int = MAX_WEIGHTED_LENGTH,
    ) -> None:
        base = settings.provider_base_url(NAME)
        self._authorize_url = (
            f"{base}/i/oauth2/authorize" if settings.sandbox_url else AUTHORIZE_URL
        )
        self._client_id = client_id
        self._client_secret = client_secret
        self._max_length = max_weighted_length
        self._max_pages = settings.reconcile_max_pages
        self._http = ProviderHTTP(NAME, base, settings, transport=transport)
        self._poll_s = settings.media_upload_poll_s
        self._poll_max_s = settings.media_upload_poll_max_s

    def close(self) -> None:
        self._http.close()

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid("a post needs text or media", rule="x.empty", provider=NAME)
        length = x_weighted_length(draft.text)
        if length > self._max_length:
            raise ContentInvalid(
                f"text weighs {length} of {self._max_length} characters",
                rule="x.max_weighted_length",
                provider=NAME,
            )
        one_video_alone(MEDIA_LIMITS, draft, MAX_IMAGES)
        check_kinds(MEDIA_LIMITS, draft)

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def _auth(self, tokens: TokenSet) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.access_token}"}

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        body: dict[str, Any] = {"text": draft.text}
        if draft.media:
            body["media"] = {"media_ids": self._media_ids(draft, tokens)}
        reply_to = draft.settings.get("reply_to_id")
        if isinstance(reply_to, str) and reply_to:
            body["reply"] = {"in_reply_to_tweet_id": reply_to}
        response = self._http.request("POST", "/2/tweets", json=body, headers=self._auth(tokens))
        if response.status_code not in (200, 201):
            raise _error(response, idempotent=False)
        tweet_id = _data(response, idempotent=False).get("id")
        if not isinstance(tweet_id, str) or not tweet_id:
            raise AmbiguousOutcome(
                "X answered without a post id", provider=NAME, http_status=response.status_code
            )
        return PublishResult(external_id=tweet_id, url=self._url(account, tweet_id))

    # -- media: POST /2/media/upload/initialize, /{id}/append, /{id}/finalize, STATUS ----------

    def _media_ids(self, draft: PostDraft, tokens: TokenSet) -> list[str]:
        """Every item's media id: reused from the ledger, or uploaded (and recorded) now."""
        ids = []
        for index, media in enumerate(draft.media):
            found = draft.uploads.reuse(NAME, index)
            if found is None:
                found = self._upload(media, media.local(NAME), tokens)
                draft.uploads.record(NAME, index, found)
            ids.append(found.media_id)
        return ids

    def _upload_call(self, method: str, path: str, tokens: TokenSet, **kw: Any) -> dict[str, Any]:
        # Nothing is published by an upload call: repeating one is harmless, so a lost answer
        # is asked again and a 5xx is transient, never ambiguous.
        response = self._http.request(
            method, path, idempotent=True, headers=self._auth(tokens), **kw
        )
        if response.status_code not in (200, 201, 202, 204):
            raise _error(response, idempotent=True)
        return _data(response, idempotent=True) if response.content else {}

    def _upload(self, media: Media, file: LocalFile, tokens: TokenSet) -> Upload:
        init = self._upload_call(
            "POST",
            "/2/media/upload/initialize",
            tokens,
            json={
                "media_type": file.mime,
                "total_bytes": file.size,
                "media_category": f"tweet_{media.kind}",
            },
        )
        media_id = init.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise TransientError("X did not return a media id", provider=NAME)
        for segment, chunk in enumerate(file.chunks(CHUNK_BYTES)):
            self._upload_call(
                "POST",
                f"/2/media/upload/{media_id}/append",
                tokens,
                data={"segment_index": str(segment)},
                files={"media": ("chunk", chunk, "application/octet-stream")},
            )
        done = self._upload_call("POST", f"/2/media/upload/{media_id}/finalize", tokens)
        if self._state(done) != "succeeded":
            wait_processed(
                lambda: (
                    self._state(
                        self._upload_call(
                            "GET",
                            "/2/media/upload",
                            tokens,
                            params={"command": "STATUS", "media_id": media_id},
                        )
                    )
                    == "succeeded"
                ),
                provider=NAME,
                what="the X upload",
                poll_s=self._poll_s,
                max_s=self._poll_max_s,
            )
        if media.alt_text:
            self._upload_call(
                "POST",
                "/2/media/metadata",
                tokens,
                json={"id": media_id, "metadata": {"alt_text": {"text": media.alt_text}}},
            )
        return Upload(media_id, expiry(init.get("expires_after_secs")))

    @staticmethod
    def _state(data: dict[str, Any]) -> str:
        info = data.get("processing_info")
        if not isinstance(info, dict):
            return "succeeded"  # no processing_info: ready (images)
        state = info.get("state")
        if state == "failed":
            error = info.get("error")
            detail = error.get("message") if isinstance(error, dict) else None
            raise PermanentError(
                f"X could not process the media: {_text(detail) or 'no detail'}", provider=NAME
            )
        return state if isinstance(state, str) else "in_progress"

    def _url(self, account: Account, tweet_id: str) -> str:
        return f"https://x.com/{account.handle or 'i/web'}/status/{tweet_id}"

    def _token_call(self, form: dict[str, str]) -> httpx.Response:
        return self._token_call_to("/2/oauth2/token", form)

    def _token_call_to(self, path: str, form: dict[str, str]) -> httpx.Response:
        headers: dict[str, str] = {}
        if self._client_secret:
            pair = f"{self._client_id}:{self._client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form["client_id"] = self._client_id
        return self._http.request("POST", path, data=form, headers=headers)

    def _token_set(self, response: httpx.Response, previous: TokenSet | None) -> TokenSet:
        if response.status_code != 200:
            # A spent single-use refresh token cannot be asked again: not idempotent.
            raise _error(response, idempotent=False, token=True)
        body = json_body(response)
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise AmbiguousOutcome(
                "unreadable token answer from X", provider=NAME, http_status=response.status_code
            )
        assert isinstance(body, dict)
        expires_in = body.get("expires_in")
        refresh = body.get("refresh_token")
        scope = body.get("scope")
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=token_expiry(expires_in),
            scopes=tuple(scope.split())
            if isinstance(scope, str)
            else (previous.scopes if previous else ()),
        )

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise ReauthRequired("no refresh token (offline.access not granted)", provider=NAME)
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        return self._token_set(self._token_call(form), tokens)

    def revoke(self, tokens: TokenSet) -> None:
        """Revoke the connection at X (``POST /2/oauth2/revoke``): the refresh token, which
        takes its access tokens with it, or the access token when there is none."""
        token = tokens.refresh_token or tokens.access_token
        hint = "refresh_token" if tokens.refresh_token else "access_token"
        response = self._token_call_to(
            "/2/oauth2/revoke", {"token": token, "token_type_hint": hint}
        )
        if response.status_code != 200:
            raise _error(response, idempotent=True, token=True)

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        wanted = comparable(draft.text)
        start = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def page(cursor: str | None) -> Page:
            params = {"max_results": str(TIMELINE_PAGE), "start_time": start}
            params["tweet.fields"] = "created_at"
            if cursor is not None:
                params["pagination_token"] = cursor
            response = self._http.request(
                "GET",
                f"/2/users/{account.external_id}/tweets",
                params=params,
                headers=self._auth(tokens),
            )
            if response.status_code != 200:
                raise _error(response, idempotent=True)
            body = json_body(response)
            meta = body.get("meta") if isinstance(body, dict) else None
            items = body.get("data", []) if isinstance(body, dict) else None
            if not isinstance(meta, dict) or not isinstance(items, list):
                raise TransientError("unreadable timeline from X", provider=NAME, http_status=200)
            token = meta.get("next_token")
            seen = [self._seen(item, account, wanted) for item in items]
            return Page(seen, token if isinstance(token, str) and token else None)

        found = search_window(
            page,
            since=since,
            max_pages=self._max_pages,
            network="X",
            serves_at_most=TIMELINE_CAP,
        )
        if isinstance(found, Absent) and _BARE_DOMAIN.search(_without_links(draft.text)):
            # X links bare domains too and shows them as t.co: the text may not have matched.
            return Unknown(f"the text holds a bare domain X may show as a link; {found.evidence}")
        return found

    def _seen(self, item: Any, account: Account, wanted: str) -> Seen:
        if not isinstance(item, dict):
            return Seen(None)
        text, tweet_id = item.get("text"), item.get("id")
        created = _parse_time(item.get("created_at"))
        if not isinstance(text, str) or not isinstance(tweet_id, str) or not tweet_id:
            return Seen(created)
        if comparable(text) != wanted:
            return Seen(created)
        return Seen(created, RemotePost(tweet_id, self._url(account, tweet_id), text, created))

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        response = self._http.request(
            "GET",
            f"/2/tweets/{external_id}",
            params={"tweet.fields": "public_metrics"},
            headers=self._auth(tokens),
        )
        if response.status_code != 200:
            raise _error(response, idempotent=True)
        metrics = _data(response, idempotent=True).get("public_metrics")
        m = metrics if isinstance(metrics, dict) else {}
        return PostMetrics(
            likes=_count(m.get("like_count")),
            reposts=_count(m.get("retweet_count")),
            replies=_count(m.get("reply_count")),
            quotes=_count(m.get("quote_count")),
            impressions=_count(m.get("impression_count")) if "impression_count" in m else None,
            raw=m,
        )

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        verifier, challenge = pkce_pair()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(scopes or DEFAULT_SCOPES),
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return AuthorizeRequest(
            url=f"{self._authorize_url}?{query}", state=state, code_verifier=verifier
        )

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier or "",
        }
        tokens = self._token_set(self._token_call(form), None)
        response = self._http.request("GET", "/2/users/me", headers=self._auth(tokens))
        if response.status_code != 200:
            raise _error(response, idempotent=True)
        me = _data(response, idempotent=True)
        user_id, username = me.get("id"), me.get("username")
        if not isinstance(user_id, str):
            raise TransientError("X did not say who the user is", provider=NAME, http_status=200)
        handle = username if isinstance(username, str) else None
        return tokens, Account(external_id=user_id, handle=handle)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
