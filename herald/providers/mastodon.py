"""Mastodon adapter (one instance per account).

Publishes with ``POST /api/v1/statuses`` carrying ``Idempotency-Key: <draft key>``: the
instance keeps keys for an hour and answers a repeat with the status it already created, so
a publish is safe to repeat and goes through :class:`ProviderHTTP` as idempotent. Limits
come from ``GET /api/v2/instance`` (cached per instance): ``max_characters`` with every URL
counting ``characters_reserved_per_url``, and ``max_media_attachments``.

Tokens never expire and there is no refresh token: a refused token (401) means the user
must reconnect (ReauthRequired). OAuth uses PKCE S256 (Mastodon ≥ 4.3).

Reconciliation reads the account's statuses (``GET /api/v1/accounts/:id/statuses``, 40 per
page, older pages by the ``max_id`` of the ``Link: rel="next"`` header) until it passes the
start of the attempt's window or the account's history ends (an empty page).

Error mapping (:func:`classify`): 429 → RateLimited at ``X-RateLimit-Reset`` (ISO 8601);
401 → ReauthRequired; other 4xx (403 scope, 404, 422 validation) → PermanentError; 5xx →
TransientError (the key makes a repeat harmless).
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from herald.providers.base import (
    Account,
    AmbiguousOutcome,
    AuthorizeRequest,
    ConfigurationError,
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
    RateLimited,
    ReauthRequired,
    RemotePost,
    TokenSet,
    TransientError,
    Upload,
    quoted,
)
from herald.providers.http import ProviderHTTP, client_refused, json_body
from herald.providers.lookup import Page, Seen, search_window
from herald.providers.media import MediaLimits, check_kinds, expiry, refuse, wait_processed
from herald.providers.oauth2 import pkce_pair
from herald.providers.text import find_urls, grapheme_count
from herald.settings import Settings

NAME = "mastodon"
DEFAULT_SCOPES = ("write:statuses", "write:media", "read:accounts", "read:statuses")
DEFAULT_RESET = timedelta(minutes=5)
UNATTACHED_TTL_S = 86_400
STATUSES_PAGE = 40  # the most an account's statuses page holds
_TAG = re.compile(r"<[^>]+>")
_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    max_characters: int = 500
    max_media_attachments: int = 4
    characters_reserved_per_url: int = 23
    image_size_limit: int = 16 * 1024 * 1024
    video_size_limit: int = 99 * 1024 * 1024
    description_limit: int = 1500


def _positive(value: Any, default: int) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else default


def parse_limits(body: Any) -> InstanceLimits:
    """Limits from a ``/api/v2/instance`` answer; defaults for anything missing or odd."""
    config = body.get("configuration") if isinstance(body, Mapping) else None
    statuses = config.get("statuses") if isinstance(config, Mapping) else None
    s = statuses if isinstance(statuses, Mapping) else {}
    media = config.get("media_attachments") if isinstance(config, Mapping) else None
    m = media if isinstance(media, Mapping) else {}
    d = InstanceLimits()
    return InstanceLimits(
        max_characters=_positive(s.get("max_characters"), d.max_characters),
        max_media_attachments=_positive(s.get("max_media_attachments"), d.max_media_attachments),
        characters_reserved_per_url=_positive(
            s.get("characters_reserved_per_url"), d.characters_reserved_per_url
        ),
        image_size_limit=_positive(m.get("image_size_limit"), d.image_size_limit),
        video_size_limit=_positive(m.get("video_size_limit"), d.video_size_limit),
        description_limit=_positive(m.get("description_limit"), d.description_limit),
    )


#: A mention (Mastodon's ``Account::MENTION_RE``): group 1 the user name, then the domain of a
#: remote account, which the count leaves out.
_MENTION = re.compile(r"(?<![=/\w])@([a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?:@[\w.-]+\w)?", re.I)


def status_length(text: str, reserved_per_url: int, spoiler_text: str = "") -> int:
    """Mastodon's count (its ``StatusLengthValidator``): the content warning and the text in
    grapheme clusters, every URL counting ``reserved_per_url`` and a remote mention
    ``@user@domain`` counting as ``@user``."""
    total, cursor = grapheme_count(spoiler_text), 0
    for span in find_urls(text):
        total += _countable(text[cursor : span.start]) + reserved_per_url
        cursor = span.end
    return total + _countable(text[cursor:])


def _countable(segment: str) -> int:
    return grapheme_count(_MENTION.sub(r"@\1", segment))


def plain_text(content: str) -> str:
    """A status's HTML ``content`` back to plain text, for matching during reconciliation."""
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", content))).strip()


def _reset_at(headers: Mapping[str, str], now: datetime) -> datetime:
    raw = headers.get("x-ratelimit-reset", "").strip()
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.fromtimestamp(float(raw), UTC)
        except (ValueError, OverflowError, OSError):
            return now + DEFAULT_RESET
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def classify(
    status: int, headers: Mapping[str, str], body: Any, *, now: datetime | None = None
) -> ProviderError:
    """The one taxonomy error for a non-success answer from a Mastodon instance."""
    now = now or datetime.now(UTC)
    message, code = f"HTTP {status} from Mastodon", None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, str) and error:
            message = quoted(error)
            code = error[:120]
        description = body.get("error_description")
        if isinstance(description, str) and description:
            message = quoted(description)
    kw: dict[str, Any] = {"provider": NAME, "http_status": status, "provider_code": code}
    if status == 429:
        return RateLimited(message, reset_at=_reset_at(headers, now), **kw)
    if status == 401:
        return ReauthRequired(message, **kw)
    if 400 <= status < 500:
        return PermanentError(message, **kw)
    return TransientError(message, **kw)


def _error(response: httpx.Response) -> ProviderError:
    return classify(response.status_code, response.headers, json_body(response))


class MastodonProvider:
    name: ClassVar[str] = NAME
    idempotency: ClassVar[Idempotency] = "key"
    refreshes_tokens: ClassVar[bool] = False
    # Tokens never expire: nothing to refresh.
    refresh_client_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = settings.provider_base_url(NAME).rstrip("/")
        # In the sandbox every account lives on the sandbox, whatever instance it names.
        self._sandboxed = bool(settings.sandbox_url)
        self._poll_s = settings.media_upload_poll_s
        self._poll_max_s = settings.media_upload_poll_max_s
        self._client_id = client_id
        self._client_secret = client_secret
        self._max_pages = settings.reconcile_max_pages
        self._http = ProviderHTTP(NAME, self._base, settings, transport=transport)
        self._limits: dict[str, InstanceLimits] = {}
        self._limits_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _instance(self, account: Account | None) -> str:
        if account is None or self._sandboxed or not account.base_url:
            return self._base
        return account.base_url.rstrip("/")

    def limits(self, account: Account) -> InstanceLimits:
        """The instance's limits, read once per instance and cached."""
        instance = self._instance(account)
        with self._limits_lock:
            cached = self._limits.get(instance)
        if cached is not None:
            return cached
        response = self._http.request("GET", f"{instance}/api/v2/instance")
        if response.status_code != 200:
            raise _error(response)
        limits = parse_limits(json_body(response))
        with self._limits_lock:
            self._limits[instance] = limits
        return limits

    def validate(self, draft: PostDraft, account: Account) -> None:
        limits = self.limits(account)
        if not draft.text.strip() and not draft.media:
            raise ContentInvalid(
                "a status needs text or media", rule="mastodon.empty", provider=NAME
            )
        warning = draft.settings.get("spoiler_text")
        length = status_length(
            draft.text,
            limits.characters_reserved_per_url,
            warning if isinstance(warning, str) else "",
        )
        if length > limits.max_characters:
            raise ContentInvalid(
                f"text counts {length} of {limits.max_characters} characters",
                rule="mastodon.max_characters",
                provider=NAME,
            )
        media = self.media_limits(account)
        if len(draft.media) > limits.max_media_attachments:
            raise refuse(
                media,
                "max_media_attachments",
                f"at most {limits.max_media_attachments} attachments; got {len(draft.media)}",
            )
        check_kinds(media, draft)

    def media_limits(self, account: Account) -> MediaLimits:
        """The instance's ``configuration.media_attachments`` (read with its other limits)."""
        limits = self.limits(account)
        return MediaLimits(
            network=NAME,
            label=f"Mastodon ({self._instance(account)})",
            max_bytes={
                "image": limits.image_size_limit,
                "gif": limits.image_size_limit,
                "video": limits.video_size_limit,
            },
            alt_max=limits.description_limit,
        )

    @staticmethod
    def _auth(tokens: TokenSet) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.access_token}"}

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        self.validate(draft, account)
        body: dict[str, Any] = {"status": draft.text}
        if draft.media:
            body["media_ids"] = self._media_ids(draft, account, tokens)
        for key in ("visibility", "language", "spoiler_text", "in_reply_to_id"):
            value = draft.settings.get(key)
            if isinstance(value, str) and value:
                body[key] = value
        headers = self._auth(tokens) | {"Idempotency-Key": draft.idempotency_key}
        response = self._http.request(
            "POST",
            f"{self._instance(account)}/api/v1/statuses",
            json=body,
            headers=headers,
            idempotent=True,
        )
        if response.status_code != 200:
            raise _error(response)
        status = json_body(response)
        status_id = status.get("id") if isinstance(status, dict) else None
        if not isinstance(status_id, str) or not status_id:
            # The key makes asking again harmless, so this is not ambiguous.
            raise TransientError(
                "Mastodon answered without a status id",
                provider=NAME,
                http_status=response.status_code,
            )
        assert isinstance(status, dict)
        url = status.get("url") if isinstance(status.get("url"), str) else None
        return PublishResult(external_id=status_id, url=url)

    # -- media: POST /api/v2/media (202 while processing), GET /api/v1/media/:id --------------

    def _media_ids(self, draft: PostDraft, account: Account, tokens: TokenSet) -> list[str]:
        ids = []
        for index, media in enumerate(draft.media):
            found = draft.uploads.reuse(NAME, index)
            if found is None:
                found = self._upload(media, media.local(NAME), account, tokens)
                draft.uploads.record(NAME, index, found)
            ids.append(found.media_id)
        return ids

    def _upload(self, media: Media, file: LocalFile, account: Account, tokens: TokenSet) -> Upload:
        instance = self._instance(account)
        with open(file.path, "rb") as handle:
            response = self._http.request(
                "POST",
                f"{instance}/api/v2/media",
                idempotent=True,  # an upload publishes nothing: repeating it is harmless
                headers=self._auth(tokens),
                data={"description": media.alt_text} if media.alt_text else {},
                files={"file": (file.filename, handle, file.mime)},
            )
        if response.status_code not in (200, 202):
            raise _error(response)
        attachment = json_body(response)
        media_id = attachment.get("id") if isinstance(attachment, dict) else None
        if not isinstance(media_id, str) or not media_id:
            raise TransientError("Mastodon answered without a media id", provider=NAME)

        def processed() -> bool:
            polled = self._http.request(
                "GET", f"{instance}/api/v1/media/{media_id}", headers=self._auth(tokens)
            )
            if polled.status_code not in (200, 206):
                raise _error(polled)
            return polled.status_code == 200

        if response.status_code == 202:
            wait_processed(
                processed,
                provider=NAME,
                what="the Mastodon upload",
                poll_s=self._poll_s,
                max_s=self._poll_max_s,
            )
        # Mastodon deletes media left unattached for a day.
        return Upload(media_id, expiry(UNATTACHED_TTL_S, margin=0.5))

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        raise ReauthRequired("Mastodon tokens do not expire and cannot be refreshed", provider=NAME)

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        wanted = unicodedata.normalize("NFC", draft.text).strip()
        path = f"{self._instance(account)}/api/v1/accounts/{account.external_id}/statuses"

        def page(max_id: str | None) -> Page:
            params = {"limit": str(STATUSES_PAGE), "exclude_reblogs": "true"}
            if max_id is not None:
                params["max_id"] = max_id
            response = self._http.request("GET", path, params=params, headers=self._auth(tokens))
            if response.status_code != 200:
                raise _error(response)
            statuses = json_body(response)
            if not isinstance(statuses, list):
                raise TransientError(
                    "unreadable status list from Mastodon", provider=NAME, http_status=200
                )
            seen = [_seen(item, wanted) for item in statuses]
            return Page(seen, next_max_id(response) if statuses else None)

        return search_window(page, since=since, max_pages=self._max_pages, network="Mastodon")

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        response = self._http.request(
            "GET",
            f"{self._instance(account)}/api/v1/statuses/{external_id}",
            headers=self._auth(tokens),
        )
        if response.status_code != 200:
            raise _error(response)
        body = json_body(response)
        b = body if isinstance(body, dict) else {}
        return PostMetrics(
            likes=_count(b.get("favourites_count")),
            reposts=_count(b.get("reblogs_count")),
            replies=_count(b.get("replies_count")),
            quotes=_count(b.get("quotes_count")),
            impressions=None,
            raw={k: b[k] for k in ("favourites_count", "reblogs_count", "replies_count") if k in b},
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
        return AuthorizeRequest(f"{self._base}/oauth/authorize?{query}", state, verifier)

    def revoke(self, tokens: TokenSet) -> None:
        """Revoke the access token at the instance (``POST /oauth/revoke``)."""
        form = {
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "token": tokens.access_token,
        }
        response = self._http.request("POST", f"{self._base}/oauth/revoke", data=form)
        if not response.is_success:
            raise _error(response)

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "code_verifier": code_verifier or "",
        }
        response = self._http.request("POST", f"{self._base}/oauth/token", data=form)
        if not response.is_success:
            error = _error(response)
            if client_refused(response.status_code, error.provider_code):
                raise ConfigurationError(
                    f"the instance refused Herald's OAuth client: {error.message}",
                    provider=NAME,
                    http_status=response.status_code,
                    provider_code=error.provider_code,
                )
            if response.status_code == 400:
                raise ReauthRequired(
                    error.message,
                    provider=NAME,
                    http_status=response.status_code,
                    provider_code=error.provider_code,
                )
            raise error
        body = json_body(response)
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            # The code is spent whether or not the token was issued: asking again must fail.
            raise AmbiguousOutcome(
                "unreadable token answer from Mastodon", provider=NAME, http_status=200
            )
        assert isinstance(body, dict)
        scope = body.get("scope")
        tokens = TokenSet(access, scopes=tuple(scope.split()) if isinstance(scope, str) else ())
        me = self._http.request(
            "GET", f"{self._base}/api/v1/accounts/verify_credentials", headers=self._auth(tokens)
        )
        if me.status_code != 200:
            raise _error(me)
        who = json_body(me)
        account_id = who.get("id") if isinstance(who, dict) else None
        if not isinstance(account_id, str):
            raise TransientError(
                "Mastodon did not say who the user is", provider=NAME, http_status=200
            )
        assert isinstance(who, dict)
        handle = who.get("acct") if isinstance(who.get("acct"), str) else None
        base_url = None if self._sandboxed else self._base
        return tokens, Account(external_id=account_id, handle=handle, base_url=base_url)


def next_max_id(response: httpx.Response) -> str | None:
    """The ``max_id`` of the older page named by the ``Link: <…>; rel="next"`` header.
    Only the id is taken from it: the request stays on the account's own instance."""
    link = response.links.get("next", {}).get("url", "")
    values = parse_qs(urlsplit(link).query).get("max_id", [])
    return values[0] if values and values[0] else None


def _seen(item: Any, wanted: str) -> Seen:
    if not isinstance(item, dict):
        return Seen(None)
    content, status_id = item.get("content"), item.get("id")
    created = _parse_time(item.get("created_at"))
    if not isinstance(content, str) or not isinstance(status_id, str) or not status_id:
        return Seen(created)
    text = plain_text(content)
    if unicodedata.normalize("NFC", text) != wanted:
        return Seen(created)
    url = item.get("url")
    return Seen(
        created, RemotePost(status_id, url if isinstance(url, str) else None, text, created)
    )


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
