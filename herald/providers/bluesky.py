"""Bluesky (AT Protocol) adapter, app-password sessions.

Connect with :meth:`BlueskyProvider.login` (``com.atproto.server.createSession``); Bluesky's
app passwords have no OAuth redirect, so ``authorize``/``exchange_code`` refuse clearly.
``refresh`` calls ``refreshSession`` with the refresh JWT as Bearer and no body; the pair
rotates, and the old refresh JWT keeps working for a grace period, so a refresh is safe to
repeat.

Idempotency: each post is written at a client-chosen record key, a TID derived from the
draft's idempotency key (:func:`tid_for`). A repeat of the same post hits the same key, which
the repository refuses, and the adapter then reads that record back
(``com.atproto.repo.getRecord``): the post is never written twice and a lost answer is
recovered inside the call. :meth:`find_post` is the same lookup: a record at the key is the
post; the repository answering ``RecordNotFound`` proves it was never written, however busy
the account has been since.

Links become facets with UTF-8 byte offsets; text is limited to 300 graphemes and 3,000 bytes.

Error mapping (:func:`classify`): 429 → RateLimited at ``RateLimit-Reset`` (epoch s); 400
``ExpiredToken``/``InvalidToken`` and 401 → AuthExpired (ReauthRequired on the session
endpoints); other 4xx → PermanentError; 5xx → TransientError (the record key makes repeats
harmless).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from herald.providers.base import (
    Absent,
    Account,
    AmbiguousOutcome,
    AuthExpired,
    AuthorizeRequest,
    ContentInvalid,
    Found,
    Idempotency,
    LocalFile,
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
from herald.providers.http import ProviderHTTP, json_body
from herald.providers.media import (
    IMAGE_FORMATS,
    MediaLimits,
    check_kinds,
    expiry,
    one_video_alone,
)
from herald.providers.text import find_urls, grapheme_count, utf8_length
from herald.settings import Settings

NAME = "bluesky"
COLLECTION = "app.bsky.feed.post"
MAX_GRAPHEMES = 300
MAX_BYTES = 3000
MAX_IMAGES = 4
BLOB_TTL_S = 3600
#: app.bsky.embed.images: blobs up to 1,000,000 bytes; app.bsky.embed.video: mp4 up to
#: 100,000,000 bytes; alt text: the app's limit of 2,000 characters.
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="Bluesky",
    max_bytes={"image": 1_000_000, "video": 100_000_000},
    formats={"image": IMAGE_FORMATS, "video": frozenset({"video/mp4"})},
    max_duration_s=180.0,
    alt_max=2000,
)
ACCESS_LIFETIME = timedelta(minutes=120)
DEFAULT_RESET = timedelta(minutes=5)
TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken"})
_B32 = "234567abcdefghijklmnopqrstuvwxyz"
# TIDs carry a microsecond timestamp; derived ones fall in [2024-01-01, +8.9 years).
_TID_BASE_US = 1_704_067_200_000_000
_TID_SPAN_US = 1 << 48


def tid_for(idempotency_key: str) -> str:
    """A valid TID record key that depends only on ``idempotency_key``."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    micros = _TID_BASE_US + int.from_bytes(digest[:8], "big") % _TID_SPAN_US
    clock_id = int.from_bytes(digest[8:10], "big") & 0x3FF
    value = (micros << 10) | clock_id
    return "".join(_B32[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def link_facets(text: str) -> list[dict[str, Any]]:
    """``app.bsky.richtext.facet#link`` entries with UTF-8 byte offsets (end exclusive)."""
    facets = []
    for span in find_urls(text):
        uri = span.url if "://" in span.url else f"https://{span.url}"
        facets.append(
            {
                "index": {"byteStart": span.byte_start, "byteEnd": span.byte_end},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}],
            }
        )
    return facets


def _reset_at(headers: Mapping[str, str], now: datetime) -> datetime:
    try:
        epoch = float(headers.get("ratelimit-reset", ""))
    except ValueError:
        return now + DEFAULT_RESET
    return datetime.fromtimestamp(epoch, UTC) if 0 < epoch < 1e11 else now + DEFAULT_RESET


def classify(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    session: bool = False,
    now: datetime | None = None,
) -> ProviderError:
    """The one taxonomy error for a non-success XRPC answer."""
    now = now or datetime.now(UTC)
    name = body.get("error") if isinstance(body, Mapping) else None
    name = name[:120] if isinstance(name, str) and name else None
    text = body.get("message") if isinstance(body, Mapping) else None
    message = quoted(text) if isinstance(text, str) and text else name or f"HTTP {status}"
    kw: dict[str, Any] = {"provider": NAME, "http_status": status, "provider_code": name}
    if status == 429:
        return RateLimited(message, reset_at=_reset_at(headers, now), **kw)
    if status == 401 or (status == 400 and name in TOKEN_ERRORS):
        return ReauthRequired(message, **kw) if session else AuthExpired(message, **kw)
    if 400 <= status < 500:
        return PermanentError(message, **kw)
    return TransientError(message, **kw)


def _error(response: httpx.Response, *, session: bool = False) -> ProviderError:
    return classify(response.status_code, response.headers, json_body(response), session=session)


def _jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT, read without verifying (only to schedule a refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return datetime.fromtimestamp(float(exp), UTC) if exp is not None else None
    except (ValueError, TypeError, OverflowError, OSError, RecursionError):
        return None


class BlueskyProvider:
    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "rkey"
    refreshes_tokens: ClassVar[bool] = True
    # refreshSession authenticates with the refresh JWT alone.
    refresh_client_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self._base = settings.provider_base_url(NAME).rstrip("/")
        self._sandboxed = bool(settings.sandbox_url)
        self._http = ProviderHTTP(NAME, self._base, settings, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _xrpc(self, account: Account | None, method: str) -> str:
        pds = self._base
        if account is not None and account.base_url and not self._sandboxed:
            pds = account.base_url.rstrip("/")
        return f"{pds}/xrpc/{method}"

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid("a post needs text or media", rule="bluesky.empty", provider=NAME)
        if grapheme_count(draft.text) > MAX_GRAPHEMES:
            raise ContentInvalid(
                "text is longer than 300 graphemes", rule="bluesky.max_graphemes", provider=NAME
            )
        if utf8_length(draft.text) > MAX_BYTES:
            raise ContentInvalid(
                "text is longer than 3000 bytes", rule="bluesky.max_bytes", provider=NAME
            )
        check_kinds(MEDIA_LIMITS, draft)
        one_video_alone(MEDIA_LIMITS, draft, MAX_IMAGES)

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _public_url(self, account: Account, rkey: str) -> str:
        return f"https://bsky.app/profile/{account.handle or account.external_id}/post/{rkey}"

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        rkey = tid_for(draft.idempotency_key)
        record: dict[str, Any] = {
            "$type": COLLECTION,
            "text": draft.text,
            "createdAt": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        if facets := link_facets(draft.text):
            record["facets"] = facets
        if draft.media:
            record["embed"] = self._embed(draft, account, tokens)
        langs = draft.settings.get("langs")
        if isinstance(langs, list | tuple) and all(isinstance(x, str) for x in langs):
            record["langs"] = list(langs)
        body = {
            "repo": account.external_id,
            "collection": COLLECTION,
            "rkey": rkey,
            "record": record,
        }
        try:
            response = self._http.request(
                "POST",
                self._xrpc(account, "com.atproto.repo.createRecord"),
                json=body,
                headers=self._auth(tokens.access_token),
                idempotent=True,
            )
        except (TransientError, AmbiguousOutcome) as failure:
            # Repeats hit the same key; one of the earlier tries may have written it.
            return self._recover(draft, account, tokens, rkey, failure)
        if response.status_code == 200:
            return PublishResult(
                external_id=self._uri_of(response, account, rkey),
                url=self._public_url(account, rkey),
            )
        error = _error(response)
        if isinstance(error, TransientError | PermanentError) and response.status_code != 413:
            # A taken key: an earlier attempt whose answer was lost wrote this post.
            return self._recover(draft, account, tokens, rkey, error)
        raise error

    # -- media: com.atproto.repo.uploadBlob, then an images or video embed --------------------

    def _embed(self, draft: PostDraft, account: Account, tokens: TokenSet) -> dict[str, Any]:
        items = []
        for index, media in enumerate(draft.media):
            found = draft.uploads.reuse(NAME, index)
            if found is None:
                found = self._upload(media.local(NAME), account, tokens)
                draft.uploads.record(NAME, index, found)
            item = json.loads(found.media_id)
            item["alt"] = media.alt_text or ""
            items.append(item)
        if draft.media[0].kind == "video":
            return {"$type": "app.bsky.embed.video", "video": items[0].pop("image"), **items[0]}
        return {"$type": "app.bsky.embed.images", "images": items}

    def _upload(self, file: LocalFile, account: Account, tokens: TokenSet) -> Upload:
        """The blob, streamed from disk; recorded as the embed item it becomes."""
        response = self._http.request(
            "POST",
            self._xrpc(account, "com.atproto.repo.uploadBlob"),
            idempotent=True,  # a blob is content-addressed: uploading it again is harmless
            content=file.stream(),
            headers=self._auth(tokens.access_token)
            | {"Content-Type": file.mime, "Content-Length": str(file.size)},
        )
        if response.status_code != 200:
            raise _error(response)
        body = json_body(response)
        blob = body.get("blob") if isinstance(body, dict) else None
        if not isinstance(blob, dict):
            raise TransientError("Bluesky answered without a blob", provider=NAME)
        item: dict[str, Any] = {"image": blob}
        if file.width and file.height:
            item["aspectRatio"] = {"width": file.width, "height": file.height}
        # The PDS collects a blob no record references; a later attempt uploads it again.
        return Upload(json.dumps(item), expiry(BLOB_TTL_S, margin=0.5))

    def _recover(
        self,
        draft: PostDraft,
        account: Account,
        tokens: TokenSet,
        rkey: str,
        error: ProviderError,
    ) -> PublishResult:
        """The post already at ``rkey`` if it is this draft's, else ``error`` re-raised."""
        existing = self._get_record(account, tokens, rkey)
        if existing is not None and existing.text == draft.text:
            return PublishResult(existing.external_id, existing.url)
        raise error

    def _uri_of(self, response: httpx.Response, account: Account, rkey: str) -> str:
        body = json_body(response)
        uri = body.get("uri") if isinstance(body, dict) else None
        return (
            uri
            if isinstance(uri, str) and uri
            else f"at://{account.external_id}/{COLLECTION}/{rkey}"
        )

    def _get_record(self, account: Account, tokens: TokenSet, rkey: str) -> RemotePost | None:
        params = {"repo": account.external_id, "collection": COLLECTION, "rkey": rkey}
        response = self._http.request(
            "GET",
            self._xrpc(account, "com.atproto.repo.getRecord"),
            params=params,
            headers=self._auth(tokens.access_token),
        )
        body = json_body(response)
        if (
            response.status_code == 400
            and isinstance(body, dict)
            and (body.get("error") == "RecordNotFound")
        ):
            return None
        if response.status_code != 200:
            raise _error(response)
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise TransientError("unreadable record from Bluesky", provider=NAME, http_status=200)
        assert isinstance(body, dict)
        uri = body.get("uri")
        created = value.get("createdAt")
        return RemotePost(
            external_id=uri
            if isinstance(uri, str)
            else f"at://{account.external_id}/{COLLECTION}/{rkey}",
            url=self._public_url(account, rkey),
            text=value["text"],
            created_at=_parse_time(created),
        )

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        rkey = tid_for(draft.idempotency_key)
        record = self._get_record(account, tokens, rkey)
        if record is None:
            return Absent(f"the repository has nothing at the post's record key {rkey}")
        return Found(record)

    def _session(
        self, response: httpx.Response, previous: TokenSet | None
    ) -> tuple[TokenSet, Account]:
        if not response.is_success:
            raise _error(response, session=True)
        body = json_body(response)
        b = body if isinstance(body, dict) else {}
        access, refresh, did = (
            _str(b.get("accessJwt")),
            _str(b.get("refreshJwt")),
            _str(b.get("did")),
        )
        if access is None or refresh is None or did is None:
            raise AmbiguousOutcome(
                "unreadable session from Bluesky", provider=NAME, http_status=200
            )
        handle = _str(b.get("handle"))
        tokens = TokenSet(
            access_token=access,
            refresh_token=refresh,
            expires_at=_jwt_expiry(access) or datetime.now(UTC) + ACCESS_LIFETIME,
            refresh_expires_at=_jwt_expiry(refresh),
            scopes=previous.scopes if previous else (),
        )
        return tokens, Account(external_id=did, handle=handle)

    def login(self, identifier: str, app_password: str) -> tuple[TokenSet, Account]:
        """Open a session with a handle (or DID) and an app password."""
        response = self._http.request(
            "POST",
            self._xrpc(None, "com.atproto.server.createSession"),
            json={"identifier": identifier, "password": app_password},
        )
        return self._session(response, None)

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise ReauthRequired("no refresh JWT: log in again", provider=NAME)
        response = self._http.request(
            "POST",
            self._xrpc(account, "com.atproto.server.refreshSession"),
            headers=self._auth(tokens.refresh_token),
            idempotent=True,
        )
        return self._session(response, tokens)[0]

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        response = self._http.request(
            "GET",
            self._xrpc(account, "app.bsky.feed.getPosts"),
            params={"uris": external_id},
            headers=self._auth(tokens.access_token),
        )
        if response.status_code != 200:
            raise _error(response)
        body = json_body(response)
        posts = body.get("posts") if isinstance(body, dict) else None
        if not isinstance(posts, list) or not posts or not isinstance(posts[0], dict):
            raise PermanentError("post not found on Bluesky", provider=NAME, http_status=200)
        p = posts[0]
        return PostMetrics(
            likes=_count(p.get("likeCount")),
            reposts=_count(p.get("repostCount")),
            replies=_count(p.get("replyCount")),
            quotes=_count(p.get("quoteCount")),
            impressions=None,
            raw={
                k: p[k] for k in ("likeCount", "repostCount", "replyCount", "quoteCount") if k in p
            },
        )

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        raise PermanentError(
            "Bluesky connects with an app password (login), not a redirect", provider=NAME
        )

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        raise PermanentError(
            "Bluesky connects with an app password (login), not a code", provider=NAME
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
