"""LinkedIn adapter (Posts API, ``/rest/posts``).

Publishes as the member (``urn:li:person:<id>``) or, when ``Account.settings`` names an
``organization_id``, as that page. The answer is 201 with an empty body and the post's URN
in ``x-restli-id``. Commentary is written in the "little" text format, so reserved
characters are escaped. LinkedIn has no idempotency key and reading a member's own posts
needs restricted scopes: :meth:`LinkedInProvider.find_post` answers Unknown and the caller
marks an ambiguous post ``needs_review``.

Tokens: 60-day access tokens; refresh tokens only for approved partners, and they do not
rotate (the same refresh token comes back, its expiry keeps counting down).

Error mapping (:func:`classify`): 429 → RateLimited at the next midnight UTC (LinkedIn sends
no rate-limit headers); 401 → AuthExpired; other 4xx (403 permission, 422 DUPLICATE_POST or
validation, 426 inactive version) → PermanentError; 503 → TransientError; other 5xx →
AmbiguousOutcome on a publish. On the token endpoint 400/401 → ReauthRequired.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthorizeRequest,
    ContentInvalid,
    Idempotency,
    LocalFile,
    Lookup,
    PermanentError,
    PostDraft,
    PostMetrics,
    ProviderError,
    PublishResult,
    ReauthRequired,
    TokenSet,
    TransientError,
    Unknown,
    Upload,
    quoted,
)
from herald.providers.http import ProviderHTTP, error_for_status, json_body
from herald.providers.media import (
    MB,
    MediaLimits,
    check_kinds,
    expiry,
    one_video_alone,
    wait_processed,
)
from herald.providers.oauth2 import token_expiry
from herald.settings import Settings

NAME = "linkedin"
MAX_IMAGES = 20
ASSET_TTL_S = 86_400  # an asset no post references is not kept for ever (⚠ undocumented)
#: Images (JPG, PNG, GIF) through /rest/images, videos (MP4) 3 s to 30 min up to 500 MB
#: through /rest/videos; ``altText`` up to 4,086 characters.
MEDIA_LIMITS = MediaLimits(
    network=NAME,
    label="LinkedIn",
    max_bytes={"image": 36 * MB, "gif": 36 * MB, "video": 500 * MB},
    formats={
        "image": frozenset({"image/jpeg", "image/png", "image/gif"}),
        "gif": frozenset({"image/gif"}),
        "video": frozenset({"video/mp4"}),
    },
    min_duration_s=3.0,
    max_duration_s=1800.0,
    alt_max=4086,
)
OAUTH_BASE = "https://www.linkedin.com"
API_VERSION = "202601"
MAX_COMMENTARY = 3000
DEFAULT_SCOPES = ("openid", "profile", "w_member_social")
REQUEST_ID_HEADER = "x-li-uuid"
_RESERVED = re.compile(r"([\\<>#~_|\[\]*(){}@])")


def escape_little_text(text: str) -> str:
    """Escape the characters the little text format reserves."""
    return _RESERVED.sub(r"\\\1", text)


def next_midnight_utc(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
        days=1
    )


def classify(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    idempotent: bool,
    token_endpoint: bool = False,
    now: datetime | None = None,
) -> ProviderError:
    """The one taxonomy error for a non-success answer from LinkedIn."""
    now = now or datetime.now(UTC)
    message, code = f"HTTP {status} from LinkedIn", None
    if isinstance(body, Mapping):
        for key in ("message", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                message = quoted(value)
                break
        raw_code = body.get("code") or body.get("error") or body.get("serviceErrorCode")
        if isinstance(raw_code, str | int) and not isinstance(raw_code, bool):
            code = str(raw_code)[:120]
    # LinkedIn's 429 carries no reset header: its quotas reset at midnight UTC.
    return error_for_status(
        status,
        message,
        provider=NAME,
        idempotent=idempotent,
        reset_at=next_midnight_utc(now),
        token_endpoint=token_endpoint,
        provider_code=code,
        request_id=headers.get(REQUEST_ID_HEADER),
    )


def _error(response: httpx.Response, *, idempotent: bool, token: bool = False) -> ProviderError:
    return classify(
        response.status_code,
        response.headers,
        json_body(response),
        idempotent=idempotent,
        token_endpoint=token,
    )


class LinkedInProvider:
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
        api_version: str = API_VERSION,
    ) -> None:
        base = settings.provider_base_url(NAME).rstrip("/")
        self._oauth = base if settings.sandbox_url else OAUTH_BASE
        self._client_id = client_id
        self._client_secret = client_secret
        self._version = api_version
        self._http = ProviderHTTP(NAME, base, settings, transport=transport)
        self._poll_s = settings.media_upload_poll_s
        self._poll_max_s = settings.media_upload_poll_max_s

    def close(self) -> None:
        self._http.close()

    def media_limits(self, account: Account) -> MediaLimits:
        return MEDIA_LIMITS

    def validate(self, draft: PostDraft, account: Account) -> None:
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid("a post needs text or media", rule="linkedin.empty", provider=NAME)
        if len(draft.text) > MAX_COMMENTARY:
            raise ContentInvalid(
                f"commentary has {len(draft.text)} of 3000 characters",
                rule="linkedin.max_length",
                provider=NAME,
            )
        one_video_alone(MEDIA_LIMITS, draft, MAX_IMAGES)
        check_kinds(MEDIA_LIMITS, draft)

    def _headers(self, tokens: TokenSet) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {tokens.access_token}",
            "LinkedIn-Version": self._version,
            "X-Restli-Protocol-Version": "2.0.0",
        }

    @staticmethod
    def author_urn(account: Account) -> str:
        org = account.settings.get("organization_id")
        if isinstance(org, str | int) and str(org):
            return f"urn:li:organization:{org}"
        return f"urn:li:person:{account.external_id}"

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        body = {
            "author": self.author_urn(account),
            "commentary": escape_little_text(draft.text),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        if draft.media:
            body["content"] = self._content(draft, account, tokens)
        response = self._http.request(
            "POST",
            "/rest/posts",
            json=body,
            headers=self._headers(tokens),
            request_id_header=REQUEST_ID_HEADER,
        )
        if response.status_code != 201:
            raise _error(response, idempotent=False)
        urn = response.headers.get("x-restli-id", "")
        if not urn.startswith("urn:li:"):
            raise AmbiguousOutcome(
                "LinkedIn answered 201 without the post URN", provider=NAME, http_status=201
            )
        return PublishResult(
            urn,
            f"https://www.linkedin.com/feed/update/{urn}",
            response.headers.get(REQUEST_ID_HEADER),
        )

    # -- media: /rest/images and /rest/videos initializeUpload, PUT, then the URN ------------

    def _content(self, draft: PostDraft, account: Account, tokens: TokenSet) -> dict[str, Any]:
        items = []
        for index, media in enumerate(draft.media):
            found = draft.uploads.reuse(NAME, index)
            if found is None:
                file = media.local(NAME)
                owner = self.author_urn(account)
                if media.kind == "video":
                    urn = self._upload_video(file, owner, tokens)
                else:
                    urn = self._upload_image(file, owner, tokens)
                self._wait_available(urn, "videos" if media.kind == "video" else "images", tokens)
                found = Upload(urn, expiry(ASSET_TTL_S))
                draft.uploads.record(NAME, index, found)
            item = {"id": found.media_id}
            if media.alt_text and media.kind != "video":
                item["altText"] = media.alt_text
            items.append(item)
        if len(items) == 1:
            return {"media": items[0]}
        return {"multiImage": {"images": items}}

    def _media_call(self, method: str, url: str, tokens: TokenSet, **kw: Any) -> httpx.Response:
        # Uploads publish nothing: repeating one is harmless, so a 5xx is transient.
        response = self._http.request(
            method,
            url,
            idempotent=True,
            request_id_header=REQUEST_ID_HEADER,
            **kw,
        )
        if not response.is_success:
            raise _error(response, idempotent=True)
        return response

    def _initialize(
        self, collection: str, request: dict[str, Any], tokens: TokenSet
    ) -> dict[str, Any]:
        response = self._media_call(
            "POST",
            f"/rest/{collection}",
            tokens,
            params={"action": "initializeUpload"},
            json={"initializeUploadRequest": request},
            headers=self._headers(tokens),
        )
        body = json_body(response)
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise TransientError("unreadable initializeUpload answer", provider=NAME)
        return value

    def _upload_image(self, file: LocalFile, owner: str, tokens: TokenSet) -> str:
        value = self._initialize("images", {"owner": owner}, tokens)
        urn, url = value.get("image"), value.get("uploadUrl")
        if not isinstance(urn, str) or not isinstance(url, str):
            raise TransientError("LinkedIn gave no image upload URL", provider=NAME)
        self._media_call(
            "PUT",
            url,
            tokens,
            content=file.stream(),
            headers=self._headers(tokens) | {"Content-Length": str(file.size)},
        )
        return urn

    def _upload_video(self, file: LocalFile, owner: str, tokens: TokenSet) -> str:
        request = {
            "owner": owner,
            "fileSizeBytes": file.size,
            "uploadCaptions": False,
            "uploadThumbnail": False,
        }
        value = self._initialize("videos", request, tokens)
        urn, parts = value.get("video"), value.get("uploadInstructions")
        if not isinstance(urn, str) or not isinstance(parts, list):
            raise TransientError("LinkedIn gave no video upload instructions", provider=NAME)
        etags = []
        with open(file.path, "rb") as handle:
            for part in parts:
                first, last = int(part["firstByte"]), int(part["lastByte"])
                handle.seek(first)
                chunk = handle.read(last - first + 1)  # one part (4 MB) in memory at a time
                response = self._media_call(
                    "PUT",
                    str(part["uploadUrl"]),
                    tokens,
                    content=chunk,
                    headers=self._headers(tokens),
                )
                etags.append(response.headers.get("etag"))
        self._media_call(
            "POST",
            "/rest/videos",
            tokens,
            params={"action": "finalizeUpload"},
            json={
                "finalizeUploadRequest": {
                    "video": urn,
                    "uploadToken": value.get("uploadToken") or "",
                    "uploadedPartIds": etags,
                }
            },
            headers=self._headers(tokens),
        )
        return urn

    def _wait_available(self, urn: str, collection: str, tokens: TokenSet) -> None:
        def available() -> bool:
            response = self._media_call(
                "GET",
                f"/rest/{collection}/{quote(urn, safe='')}",
                tokens,
                headers=self._headers(tokens),
            )
            body = json_body(response)
            status = body.get("status") if isinstance(body, dict) else None
            if status == "PROCESSING_FAILED":
                raise PermanentError(f"LinkedIn could not process the media {urn}", provider=NAME)
            return status == "AVAILABLE"

        wait_processed(
            available,
            provider=NAME,
            what="the LinkedIn upload",
            poll_s=self._poll_s,
            max_s=self._poll_max_s,
        )

    def _token_set(self, response: httpx.Response, previous: TokenSet | None) -> TokenSet:
        """``previous`` None: the answer to a code exchange, which cannot be repeated (the
        code is single use), so an unreadable answer is ambiguous; a refresh can be asked
        again (the refresh token does not rotate)."""
        if not response.is_success:
            raise _error(response, idempotent=True, token=True)
        body = json_body(response)
        b = body if isinstance(body, dict) else {}
        access = b.get("access_token")
        if not isinstance(access, str) or not access:
            cls = TransientError if previous is not None else AmbiguousOutcome
            raise cls("unreadable token answer from LinkedIn", provider=NAME, http_status=200)
        now = datetime.now(UTC)
        refresh = b.get("refresh_token")
        refresh_in = b.get("refresh_token_expires_in")
        scope = b.get("scope")
        return TokenSet(
            access_token=access,
            refresh_token=refresh
            if isinstance(refresh, str) and refresh
            else (previous.refresh_token if previous else None),
            expires_at=token_expiry(b.get("expires_in"), now),
            refresh_expires_at=token_expiry(refresh_in, now)
            or (previous.refresh_expires_at if previous else None),
            scopes=tuple(scope.replace(",", " ").split())
            if isinstance(scope, str)
            else (previous.scopes if previous else ()),
        )

    def _token_call(self, form: dict[str, str], *, idempotent: bool) -> httpx.Response:
        """Refreshing is repeatable (the refresh token does not rotate); a code is single use."""
        form |= {"client_id": self._client_id, "client_secret": self._client_secret}
        return self._http.request(
            "POST", f"{self._oauth}/oauth/v2/accessToken", data=form, idempotent=idempotent
        )

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise ReauthRequired(
                "no refresh token: LinkedIn issues them to partners only", provider=NAME
            )
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        return self._token_set(self._token_call(form, idempotent=True), tokens)

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        """Reading a member's own posts needs scopes Herald does not hold."""
        return Unknown("LinkedIn does not let Herald read a member's posts back")

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        response = self._http.request(
            "GET",
            f"/v2/socialActions/{quote(external_id, safe='')}",
            headers=self._headers(tokens),
            request_id_header=REQUEST_ID_HEADER,
        )
        if response.status_code != 200:
            raise _error(response, idempotent=True)
        body = json_body(response)
        b = body if isinstance(body, dict) else {}
        likes, comments = _dict(b.get("likesSummary")), _dict(b.get("commentsSummary"))
        return PostMetrics(
            likes=_count(likes.get("totalLikes")),
            replies=_count(comments.get("aggregatedTotalComments")),
            impressions=None,
            raw={"likesSummary": likes, "commentsSummary": comments},
        )

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "scope": " ".join(scopes or DEFAULT_SCOPES),
            }
        )
        return AuthorizeRequest(f"{self._oauth}/oauth/v2/authorization?{query}", state, None)

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        tokens = self._token_set(self._token_call(form, idempotent=False), None)
        response = self._http.request("GET", "/v2/userinfo", headers=self._headers(tokens))
        if response.status_code != 200:
            raise _error(response, idempotent=True)
        body = json_body(response)
        sub = body.get("sub") if isinstance(body, dict) else None
        if not isinstance(sub, str) or not sub:
            raise TransientError(
                "LinkedIn did not say who the member is", provider=NAME, http_status=200
            )
        assert isinstance(body, dict)
        name = body.get("name")
        return tokens, Account(external_id=sub, handle=name if isinstance(name, str) else None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
