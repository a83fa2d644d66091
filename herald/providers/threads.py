"""Threads (Meta Graph API) adapter.

Publishing takes two steps: create a media container (``POST /{user-id}/threads``), then
publish it (``POST /{user-id}/threads_publish?creation_id=``). The container is Threads'
only idempotency: once its ``status`` is ``PUBLISHED`` the post exists. So when the answer to
the publish step is lost, the container is read before anything is repeated; an unpublished
container expires on its own (24 h), so creating one is always safe.

``Account.external_id`` is the Threads user id. ``TokenSet.access_token`` is the long-lived
token, sent as the ``access_token`` parameter as Meta documents; a refresh replaces the token
itself (there is no refresh token). ``draft.settings["threads_container_id"]`` may name a
container created by an earlier attempt: it is checked first.

Reconciliation reads ``GET /{user-id}/threads?since=<attempt start>&limit=100``, following
``paging.cursors.after`` while ``paging.next`` says older posts remain.
"""

from __future__ import annotations

import time
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
    Found,
    Idempotency,
    Lookup,
    Media,
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
from herald.providers.http import ProviderHTTP, json_body, server_error
from herald.providers.lookup import Page, Seen, search_window
from herald.providers.media import (
    MB,
    VIDEO_FORMATS,
    MediaLimits,
    check_kinds,
    expiry,
    refuse,
    wait_processed,
)
from herald.providers.oauth2 import token_expiry
from herald.providers.text import threads_length
from herald.settings import Settings

NAME = "threads"
VERSION = "v1.0"
MAX_TEXT = 500
LIST_PAGE = 100  # the most ``limit`` allows on /{user-id}/threads
AUTHORIZE_URL = "https://threads.net/oauth/authorize"
DEFAULT_SCOPES = ("threads_basic", "threads_content_publish", "threads_manage_insights")
THROTTLE_CODES = frozenset({4, 17, 32, 341, 613})
TRANSIENT_CODES = frozenset({1, 2})
# Threads documents no throttling headers; come back after this when none is given.
DEFAULT_BACKOFF_S = 600
MAX_CAROUSEL = 20
#: JPEG/PNG up to 8 MB; MP4/MOV up to 1 GB and 5 minutes (⚠ from a secondary source).
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="Threads",
    max_bytes={"image": 8 * MB, "video": 1000 * MB},
    formats={"image": frozenset({"image/jpeg", "image/png"}), "video": VIDEO_FORMATS},
    max_duration_s=300.0,
    alt_max=1000,
)
CONTAINER_TTL_S = 86_400  # an unpublished container expires after 24 h


def _media_params(media: Media) -> dict[str, Any]:
    params = {
        "media_type": _MEDIA_TYPE[media.kind],
        ("image_url" if media.kind == "image" else "video_url"): media.url,
    }
    if media.alt_text:
        params["alt_text"] = media.alt_text
    return params


_MEDIA_TYPE = {"image": "IMAGE", "video": "VIDEO"}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _backoff(headers: httpx.Headers) -> float:
    try:
        return min(max(float(headers.get("retry-after", DEFAULT_BACKOFF_S)), 0.0), 86_400.0)
    except ValueError:
        return DEFAULT_BACKOFF_S


def _client_refused(code: int | None, message: str) -> bool:
    """Graph's answers to a missing or wrong app id or secret on its token endpoints: code
    101 (app id), or code 1 naming the client secret (Meta gives it no code of its own)."""
    return code == 101 or (code == 1 and "client secret" in message.lower())


def classify(  # noqa: PLR0911 - one return per taxonomy class reads clearest
    response: httpx.Response,
    *,
    idempotent: bool = False,
    refreshing: bool = False,
    now: datetime | None = None,
) -> ProviderError:
    """Translate a Graph API error (``{"error":{message, type, code, error_subcode,
    fbtrace_id}}``) into one taxonomy error; the Graph ``code`` wins over the HTTP status."""
    now = now or datetime.now(UTC)
    status = response.status_code
    body = json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = _int(error.get("code"))
    raw_message = error.get("error_user_msg") or error.get("message")
    message = raw_message if isinstance(raw_message, str) and raw_message else f"HTTP {status}"
    message = quoted(message)
    trace = error.get("fbtrace_id")
    kw: dict[str, Any] = {
        "provider": NAME,
        "http_status": status,
        "provider_code": str(code) if code is not None else None,
        "request_id": trace if isinstance(trace, str) else response.headers.get("x-fb-trace-id"),
    }
    if refreshing and _client_refused(code, message):
        return ConfigurationError(f"Threads refused Herald's app credentials: {message}", **kw)
    if code == 190 or (code is None and status == 401):
        if refreshing:
            return ReauthRequired(f"the Threads token can no longer be refreshed: {message}", **kw)
        return AuthExpired(message, **kw)
    if code in THROTTLE_CODES or (code is None and status == 429):
        return RateLimited(
            message, reset_at=now + timedelta(seconds=_backoff(response.headers)), **kw
        )
    if code in TRANSIENT_CODES:
        return TransientError(message, **kw)
    if code is not None and (code == 10 or 200 <= code <= 299):
        return PermanentError(f"permission missing: {message}", **kw)
    if code is None and status >= 500:
        return server_error(NAME, response, idempotent=idempotent, message=message)
    return PermanentError(message, **kw)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("+0000", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seen(item: Any, text: str) -> Seen:
    if not isinstance(item, dict):
        return Seen(None)
    created = _parse_time(item.get("timestamp"))
    media_id = item.get("id")
    if item.get("text") != text or not isinstance(media_id, str | int):
        return Seen(created)
    link = item.get("permalink")
    url = link if isinstance(link, str) else None
    return Seen(created, RemotePost(str(media_id), url, text, created))


class ThreadsProvider:
    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "container"
    refreshes_tokens: ClassVar[bool] = True
    # th_refresh_token needs only the long-lived token itself.
    refresh_client_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.BaseTransport | None = None,
        processing_polls: int = 5,
        processing_poll_s: float = 2.0,
    ) -> None:
        base = settings.provider_base_url(NAME)
        self._authorize_url = f"{base}/oauth/authorize" if settings.sandbox_url else AUTHORIZE_URL
        self._client_id = client_id
        self._client_secret = client_secret
        self._polls = processing_polls
        self._poll_s = processing_poll_s
        self._max_pages = settings.reconcile_max_pages
        self._http = ProviderHTTP(NAME, base, settings, transport=transport)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ calls

    def _call(
        self,
        method: str,
        path: str,
        tokens: TokenSet | None,
        params: dict[str, Any],
        *,
        idempotent: bool | None = None,
        refreshing: bool = False,
    ) -> dict[str, Any]:
        # The token goes in the query string, as Meta documents it (the query never reaches
        # a log: ProviderHTTP strips it).
        query = {"access_token": tokens.access_token} if tokens is not None else {}
        safe = method == "GET" if idempotent is None else idempotent
        if method == "GET":
            response = self._http.request(method, path, params={**params, **query})
        else:
            response = self._http.request(method, path, params=query, data=params, idempotent=safe)
        if not response.is_success:
            raise classify(response, idempotent=safe, refreshing=refreshing)
        body = json_body(response)
        if not isinstance(body, dict):
            cls = TransientError if safe else AmbiguousOutcome
            raise cls(
                "Threads answered with an unreadable body",
                provider=NAME,
                http_status=response.status_code,
            )
        return body

    # ------------------------------------------------------------------ publishing

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not account.external_id.strip():
            raise ContentInvalid("no Threads user id", rule="threads.user_id", provider=NAME)
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid("post is empty", rule="threads.empty", provider=NAME)
        length = threads_length(draft.text)
        if length > MAX_TEXT:
            raise ContentInvalid(
                f"text counts {length} (emoji by UTF-8 bytes); Threads allows {MAX_TEXT}",
                rule="threads.max_length",
                provider=NAME,
            )
        if len(draft.media) > MAX_CAROUSEL:
            raise refuse(
                MEDIA_LIMITS,
                "max_media",
                f"a carousel holds 2 to {MAX_CAROUSEL} items; got {len(draft.media)}",
            )
        check_kinds(MEDIA_LIMITS, draft)

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        user = account.external_id
        earlier = draft.settings.get("threads_container_id")
        if earlier:
            status = self._earlier_status(str(earlier), tokens)
            if status == "PUBLISHED":
                return self._published_elsewhere(draft, account, tokens)
            if status == "FINISHED":
                return self._publish_container(str(earlier), draft, account, tokens)
        container = self._create_container(draft, user, tokens)
        self._await_processing(container, tokens, draft)
        return self._publish_container(container, draft, account, tokens)

    def _create_container(self, draft: PostDraft, user: str, tokens: TokenSet) -> str:
        params: dict[str, Any] = {"media_type": "TEXT", "text": draft.text}
        if len(draft.media) == 1:
            params |= _media_params(draft.media[0])
        elif draft.media:
            children = self._carousel_items(draft, user, tokens)
            params |= {"media_type": "CAROUSEL", "children": ",".join(children)}
        if draft.settings.get("reply_control"):
            params["reply_control"] = str(draft.settings["reply_control"])
        # An unpublished container expires harmlessly, so creating one may be repeated.
        body = self._call("POST", f"/{VERSION}/{user}/threads", tokens, params, idempotent=True)
        container = body.get("id")
        if not isinstance(container, str | int) or isinstance(container, bool):
            raise TransientError("Threads created no container id", provider=NAME)
        return str(container)

    def _carousel_items(self, draft: PostDraft, user: str, tokens: TokenSet) -> list[str]:
        """One FINISHED item container per media (Threads fetches each from its public URL),
        reused from the ledger until it would expire (24 h unpublished)."""
        children = []
        for index, media in enumerate(draft.media):
            found = draft.uploads.reuse(NAME, index)
            if found is None:
                params = _media_params(media) | {"is_carousel_item": "true"}
                body = self._call(
                    "POST", f"/{VERSION}/{user}/threads", tokens, params, idempotent=True
                )
                item = body.get("id")
                if not isinstance(item, str | int) or isinstance(item, bool):
                    raise TransientError("Threads created no item container id", provider=NAME)
                self._wait_finished(str(item), tokens)
                found = Upload(str(item), expiry(CONTAINER_TTL_S))
                draft.uploads.record(NAME, index, found)
            children.append(found.media_id)
        return children

    def _wait_finished(self, container: str, tokens: TokenSet) -> None:
        wait_processed(
            lambda: self._container_status(container, tokens) == "FINISHED",
            provider=NAME,
            what="the Threads media container",
            poll_s=self._poll_s,
            max_s=self._poll_s * self._polls,
        )

    def _container_status(self, container: str, tokens: TokenSet) -> str:
        body = self._call(
            "GET", f"/{VERSION}/{container}", tokens, {"fields": "id,status,error_message"}
        )
        status = body.get("status")
        if status == "ERROR":
            detail = body.get("error_message")
            raise PermanentError(
                f"Threads could not process the media: {detail or 'no detail'}",
                provider=NAME,
                provider_code="container_error",
            )
        return status if isinstance(status, str) else "UNKNOWN"

    def _earlier_status(self, container: str, tokens: TokenSet) -> str:
        """An earlier attempt's container; one Threads no longer knows was never published
        (a published container stays readable), so a new one may be created."""
        try:
            return self._container_status(container, tokens)
        except PermanentError as exc:
            if exc.provider_code == "container_error":
                raise
            return "UNKNOWN"

    def _await_processing(self, container: str, tokens: TokenSet, draft: PostDraft) -> None:
        if not draft.media:
            return  # text containers are ready at once
        for attempt in range(self._polls):
            if self._container_status(container, tokens) != "IN_PROGRESS":
                return
            if attempt + 1 < self._polls:
                time.sleep(self._poll_s)
        raise TransientError("Threads is still processing the media", provider=NAME)

    def _publish_container(
        self,
        container: str,
        draft: PostDraft,
        account: Account,
        tokens: TokenSet,
        *,
        second_try: bool = False,
    ) -> PublishResult:
        path = f"/{VERSION}/{account.external_id}/threads_publish"
        try:
            body = self._call("POST", path, tokens, {"creation_id": container})
            media_id = body.get("id")
            if not isinstance(media_id, str | int) or isinstance(media_id, bool):
                raise AmbiguousOutcome("Threads published without a media id", provider=NAME)
        except (AmbiguousOutcome, TransientError) as exc:
            status = self._status_after(container, tokens, exc)
            if status == "PUBLISHED":
                return self._published_elsewhere(draft, account, tokens)
            if status == "EXPIRED":
                raise TransientError(f"container {container} expired", provider=NAME) from exc
            if status == "FINISHED" and not second_try:
                # Proven unpublished: publishing the same container again cannot duplicate.
                return self._publish_container(container, draft, account, tokens, second_try=True)
            cls = TransientError if status in ("FINISHED", "IN_PROGRESS") else AmbiguousOutcome
            raise cls(
                f"{exc.message}; container {container} is {status}",
                provider=NAME,
                http_status=exc.http_status,
            ) from exc
        return PublishResult(str(media_id), self._permalink(str(media_id), tokens))

    def _status_after(self, container: str, tokens: TokenSet, error: ProviderError) -> str:
        """The container's status after a publish answer was lost or refused as transient."""
        try:
            return self._container_status(container, tokens)
        except (TransientError, AmbiguousOutcome, RateLimited, AuthExpired, ReauthRequired):
            raise AmbiguousOutcome(
                f"{error.message}; container {container} could not be checked",
                provider=NAME,
                http_status=error.http_status,
            ) from error

    def _published_elsewhere(
        self, draft: PostDraft, account: Account, tokens: TokenSet
    ) -> PublishResult:
        try:
            found = self.find_post(draft, account, tokens, datetime.now(UTC) - timedelta(days=1))
        except ProviderError as exc:
            # The post exists; only its id is unknown. Never let this look retryable.
            raise AmbiguousOutcome(
                f"the container is PUBLISHED but the listing failed: {exc.message}",
                provider=NAME,
                http_status=exc.http_status,
            ) from exc
        if not isinstance(found, Found):
            raise AmbiguousOutcome(
                "the container is PUBLISHED but the post is not listed yet", provider=NAME
            )
        return PublishResult(found.post.external_id, found.post.url)

    def _permalink(self, media_id: str, tokens: TokenSet) -> str | None:
        try:
            body = self._call("GET", f"/{VERSION}/{media_id}", tokens, {"fields": "permalink"})
        except ProviderError:
            return None  # the post exists; a missing link must not turn success into failure
        link = body.get("permalink")
        return link if isinstance(link, str) else None

    # ------------------------------------------------------------------ tokens

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        body = self._call(
            "GET",
            "/refresh_access_token",
            None,
            {"grant_type": "th_refresh_token", "access_token": tokens.access_token},
            refreshing=True,
        )
        return self._long_lived(body, tokens.scopes)

    @staticmethod
    def _long_lived(body: dict[str, Any], scopes: tuple[str, ...]) -> TokenSet:
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TransientError("Threads returned no access token", provider=NAME)
        expires = token_expiry(body.get("expires_in"))
        return TokenSet(access_token=token, expires_at=expires, scopes=scopes)

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        query = urlencode(
            {
                "client_id": self._client_id,
                "redirect_uri": redirect_uri,
                "scope": ",".join(scopes or DEFAULT_SCOPES),
                "response_type": "code",
                "state": state,
            }
        )
        return AuthorizeRequest(url=f"{self._authorize_url}?{query}", state=state)

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        short = self._call(
            "POST",
            "/oauth/access_token",
            None,
            {
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
            },
            refreshing=True,
        )
        user_id = short.get("user_id")
        short_token = short.get("access_token")
        if not isinstance(short_token, str) or not isinstance(user_id, str | int):
            # A 2xx to a single-use code: the token may well exist, unread.
            raise AmbiguousOutcome("Threads' code exchange returned no token", provider=NAME)
        long = self._call(
            "GET",
            "/access_token",
            None,
            {
                "grant_type": "th_exchange_token",
                "client_secret": self._client_secret,
                "access_token": short_token,
            },
            refreshing=True,
        )
        tokens = self._long_lived(long, DEFAULT_SCOPES)
        me = self._call("GET", f"/{VERSION}/me", tokens, {"fields": "id,username"})
        handle = me.get("username")
        return tokens, Account(
            external_id=str(user_id), handle=handle if isinstance(handle, str) else None
        )

    # ------------------------------------------------------------------ reading back

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        path = f"/{VERSION}/{account.external_id}/threads"
        query = {
            "fields": "id,text,timestamp,permalink",
            "since": int(since.timestamp()),
            "limit": LIST_PAGE,
        }

        def page(cursor: str | None) -> Page:
            body = self._call("GET", path, tokens, query | ({"after": cursor} if cursor else {}))
            items, paging = body.get("data"), body.get("paging")
            if not isinstance(items, list):
                raise TransientError("unreadable thread list from Threads", provider=NAME)
            paging = paging if isinstance(paging, dict) else {}
            cursors = paging.get("cursors")
            after = cursors.get("after") if isinstance(cursors, dict) else None
            older = after if paging.get("next") and isinstance(after, str) and after else None
            return Page([_seen(item, draft.text) for item in items], older)

        return search_window(page, since=since, max_pages=self._max_pages, network="Threads")

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        body = self._call(
            "GET",
            f"/{VERSION}/{external_id}/insights",
            tokens,
            {"metric": "views,likes,replies,reposts,quotes,shares"},
        )
        values: dict[str, int] = {}
        entries = body.get("data")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            points = entry.get("values")
            first = points[0] if isinstance(points, list) and points else None
            value = _int(first.get("value")) if isinstance(first, dict) else None
            if value is not None:
                values[entry["name"]] = value
        return PostMetrics(
            likes=values.get("likes", 0),
            reposts=values.get("reposts", 0),
            replies=values.get("replies", 0),
            quotes=values.get("quotes", 0),
            impressions=values.get("views"),
            raw=values,
        )
