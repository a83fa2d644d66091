"""The provider boundary: one small protocol, the DTOs that cross it, and the error taxonomy.

Everything a network can say is translated, inside its own module, into one of these::

    ProviderError                  base of everything a provider call raises
    ├── RateLimited                429 or the network's equivalent; ``reset_at`` says when to return
    ├── AuthExpired                the access token is no longer accepted: refresh, then try again
    ├── ReauthRequired             the grant itself is dead (refresh token revoked, app removed):
    │                              only the user can fix it by connecting again
    ├── ConfigurationError         Herald's own OAuth client credentials are missing or were
    │                              refused (``invalid_client``): the operator's to fix, never
    │                              the user's; integrations stay as they are, posts wait
    ├── PermanentError             refused for good (bad content, forbidden, duplicate)
    │   └── ContentInvalid         our own validation said no before any call; ``rule`` names it
    ├── TransientError             5xx, connection refused: the request did not take effect
    └── AmbiguousOutcome           the request may have been applied (timeout after sending,
                                   connection reset mid-response, 5xx from a non-idempotent write)

Callers branch on these classes only; nobody outside a provider module reads a network's
error bodies. Every error carries the network's own message and request id when it had one,
and never a token: the message is redacted (:mod:`herald.redaction`) when the error is made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from herald.contracts import scrub_unstorable
from herald.redaction import redact_text

if TYPE_CHECKING:
    from herald.providers.media import MediaLimits

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ProviderError(Exception):
    """Base of the taxonomy. ``code`` is a short stable string for metrics and the database."""

    code: ClassVar[str] = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        http_status: int | None = None,
        request_id: str | None = None,
        provider_code: str | None = None,
    ) -> None:
        # A network's message may quote the request back (its token, its query string):
        # redacted here, once, so no log, span, row or answer built from it carries a secret.
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.http_status = http_status
        self.request_id = request_id
        self.provider_code = provider_code

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status else ""
        return f"{self.provider}: {self.message}{status}"


#: How much of a network's own text an error message keeps.
QUOTE_CHARS = 300


def quoted(text: str, limit: int = QUOTE_CHARS) -> str:
    """A network's text for an error message: redacted whole, then cut. Cut first, a secret
    could be split where no rule recognises what is left of it (a quoted value without its
    closing quote)."""
    return redact_text(text)[:limit]


#: The furthest a network's rate limit may pause an integration: a reset further ahead (a
#: broken or hostile instance's ``9999-12-31``) would park its posts for good.
MAX_RATE_LIMIT_WAIT = timedelta(days=1)


class RateLimited(ProviderError):
    """The network asked us to slow down; nothing was applied. Come back at ``reset_at``, at
    most :data:`MAX_RATE_LIMIT_WAIT` from now (a naive time is read as UTC)."""

    code = "rate_limited"

    def __init__(self, message: str, *, reset_at: datetime, **kw: Any) -> None:
        super().__init__(message, **kw)
        if reset_at.tzinfo is None:
            reset_at = reset_at.replace(tzinfo=UTC)
        self.reset_at = min(reset_at, datetime.now(UTC) + MAX_RATE_LIMIT_WAIT)


class AuthExpired(ProviderError):
    """The access token was refused as expired or invalid; a refresh may fix it."""

    code = "auth_expired"


class ReauthRequired(ProviderError):
    """The refresh token or grant is dead; the integration needs the user to reconnect."""

    code = "reauth_required"


class ConfigurationError(ProviderError):
    """Herald's configuration, not the user's grant, is at fault: the OAuth client credentials
    a token call needs are missing, or the network refused them (``invalid_client``,
    ``unauthorized_client``, a 401 from the token endpoint)."""

    code = "configuration_error"


class PermanentError(ProviderError):
    """The network refused the request for good; repeating it cannot help."""

    code = "permanent"


class ContentInvalid(PermanentError):
    """Herald's own validation refused the post before any call. ``rule`` names the rule."""

    code = "content_invalid"

    def __init__(self, message: str, *, rule: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.rule = rule


class TransientError(ProviderError):
    """A failure that proves the request was not applied (5xx on a safe call, refused connect)."""

    code = "transient"


class MediaUnavailable(TransientError):
    """A media file could not be fetched from where the post points (its host failed or
    timed out): try later. Says nothing about the network itself, so no circuit counts it."""

    code = "media_unavailable"


class ClaimLapsed(TransientError):
    """Nothing of the attempt reached the network: its claim on the post lapsed before its
    first write (:mod:`.fence`). Says nothing about the network, so no circuit counts it."""

    code = "claim_expired"


class AmbiguousOutcome(ProviderError):
    """The request may or may not have been applied: reconcile before trying again."""

    code = "ambiguous"


class ClaimLapsedMidCall(AmbiguousOutcome):
    """The attempt's claim lapsed after one of its writes went out (:mod:`.fence`): whether
    the post exists is unknown. Says nothing about the network, so no circuit counts it."""

    code = "claim_expired_mid_call"


ERROR_CLASSES: tuple[type[ProviderError], ...] = (
    RateLimited,
    AuthExpired,
    ReauthRequired,
    ConfigurationError,
    ContentInvalid,
    PermanentError,
    MediaUnavailable,
    ClaimLapsed,
    TransientError,
    ClaimLapsedMidCall,
    AmbiguousOutcome,
)

# --------------------------------------------------------------------------------------------
# DTOs
# --------------------------------------------------------------------------------------------

MediaKind = Literal["image", "gif", "video"]


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A media file fetched to disk (:mod:`herald.media`), with what its bytes say it is.
    Adapters read it in chunks; it is never held whole in memory."""

    path: str
    size: int
    mime: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while block := handle.read(size):
                yield block

    def stream(self) -> FileStream:
        """A body for a raw upload: re-iterable (a retried request reads it again)."""
        return FileStream(self)

    @property
    def filename(self) -> str:
        return "media." + self.mime.rpartition("/")[2].replace("quicktime", "mov")


class FileStream:
    def __init__(self, file: LocalFile) -> None:
        self.file = file

    def __iter__(self) -> Iterator[bytes]:
        return self.file.chunks(1 << 16)


@dataclass(frozen=True, slots=True)
class Media:
    """A piece of media hosted at a URL. ``file`` is set at publish, once Herald fetched it."""

    url: str
    kind: MediaKind = "image"
    size_bytes: int | None = None
    alt_text: str | None = None
    file: LocalFile | None = None

    def local(self, provider: str) -> LocalFile:
        if self.file is None:
            # Its upload was reused when the attempt began and has expired since: the next
            # attempt fetches and uploads it again.
            raise TransientError(
                "an uploaded media item expired during the attempt", provider=provider
            )
        return self.file


@dataclass(frozen=True, slots=True)
class Upload:
    """A network's handle for media uploaded once (a media id, a URN, a blob reference as
    JSON), with when the network forgets it."""

    media_id: str
    expires_at: datetime | None = None


class UploadLedger(Protocol):
    """Where an adapter finds the media it already uploaded for this post (item ``index``),
    so a retry, a reconcile or a refresh-then-publish never uploads twice. ``reuse`` answers
    only uploads that have not expired."""

    def reuse(self, network: str, index: int) -> Upload | None: ...

    def record(self, network: str, index: int, upload: Upload) -> None: ...


class MemoryLedger:
    """A ledger for one call (tests, the CLI); the publisher uses the database's."""

    def __init__(self) -> None:
        self.uploads: dict[tuple[str, int], Upload] = {}

    def reuse(self, network: str, index: int) -> Upload | None:
        found = self.uploads.get((network, index))
        if found is None or (found.expires_at is not None and found.expires_at <= _now()):
            return None
        return found

    def record(self, network: str, index: int, upload: Upload) -> None:
        self.uploads[(network, index)] = upload


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Account:
    """The connected account on the network, as stored on the integration.

    ``external_id`` is the network's id for it (X user id, Bluesky DID, Mastodon account id,
    Telegram chat id, Discord channel or webhook id, Reddit username). ``base_url`` overrides
    the network's base URL for per-instance networks (Mastodon instance, Bluesky PDS).
    ``settings`` holds per-connection facts a network needs (a Discord webhook id, a Threads
    user id, a default subreddit); never a secret.
    """

    external_id: str
    handle: str | None = None
    base_url: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Credentials for one connection, decrypted only for the duration of a call."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()

    def __repr__(self) -> str:  # tokens never reach a log through repr
        return f"TokenSet(expires_at={self.expires_at!r}, scopes={self.scopes!r})"


@dataclass(frozen=True, slots=True)
class PostDraft:
    """What to publish. ``idempotency_key`` is stable across every attempt of one post."""

    text: str
    idempotency_key: str
    media: tuple[Media, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    uploads: UploadLedger = field(default_factory=MemoryLedger, compare=False)


#: The longest post id Herald keeps (``posts.external_id``, and the answer a worker carries).
EXTERNAL_ID_CHARS = 500
#: The longest post URL kept (``posts.external_url``); a longer one is not kept at all.
EXTERNAL_URL_CHARS = 1000
#: The longest request id kept (``publish_attempts.provider_request_id``).
REQUEST_ID_CHARS = 200


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The network's yes. Whatever it said is made storable here, where every adapter's and
    every reconciliation's result is made: an answer the database refused to record would
    leave a published post ``publishing``, then in review. NUL and unpaired surrogates become
    U+FFFD; an id or request id past its column is cut; a URL past it is dropped (cut short,
    it would lead elsewhere)."""

    external_id: str
    url: str | None
    request_id: str | None = None

    def __post_init__(self) -> None:
        external_id = scrub_unstorable(self.external_id)[:EXTERNAL_ID_CHARS]
        object.__setattr__(self, "external_id", external_id)
        url = None if self.url is None else scrub_unstorable(self.url)
        object.__setattr__(self, "url", url if url and len(url) <= EXTERNAL_URL_CHARS else None)
        if self.request_id is not None:
            request_id = scrub_unstorable(self.request_id)[:REQUEST_ID_CHARS] or None
            object.__setattr__(self, "request_id", request_id)


@dataclass(frozen=True, slots=True)
class RemotePost:
    """A post found on the network during reconciliation."""

    external_id: str
    url: str | None
    text: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """The lookup found the post at the network."""

    post: RemotePost


@dataclass(frozen=True, slots=True)
class Absent:
    """The network proved the post is not there: the lookup read everything the account
    published since the attempt began, or the network's own key lookup says so. Only this
    makes a second send safe."""

    evidence: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """The lookup could not prove absence (no way to read the account back, the page budget
    ran out, the network stops serving older posts). The post must go to a person."""

    reason: str


#: What :meth:`Provider.find_post` answers. Match on the class; there is no fourth case.
Lookup = Found | Absent | Unknown


@dataclass(frozen=True, slots=True)
class PostMetrics:
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    quotes: int = 0
    impressions: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """Where to send the user, and what to keep (state, PKCE verifier) until they return."""

    url: str
    state: str
    code_verifier: str | None = None


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------

Idempotency = Literal["key", "nonce", "rkey", "container", "none"]


@runtime_checkable
class Provider(Protocol):
    """One social network. Methods raise only :class:`ProviderError` subclasses."""

    name: ClassVar[str]
    #: How a repeated publish is made harmless at the network, if at all.
    idempotency: ClassVar[Idempotency]
    #: Whether access tokens expire and can be refreshed.
    refreshes_tokens: ClassVar[bool]
    #: The OAuth client credentials (``client_id``, ``client_secret``) a refresh sends; a
    #: refresh without them is refused as a :class:`ConfigurationError` before any call.
    refresh_client_fields: ClassVar[tuple[str, ...]]

    def validate(self, draft: PostDraft, account: Account) -> None:
        """Raise :class:`ContentInvalid` naming the rule if the draft cannot be published."""

    def media_limits(self, account: Account) -> MediaLimits:
        """The network's media limits (for the account's instance, where they vary)."""

    def publish(self, draft: PostDraft, account: Account, tokens: TokenSet) -> PublishResult:
        """Create the post. Ambiguity is raised as :class:`AmbiguousOutcome`, never guessed."""

    def refresh(self, account: Account, tokens: TokenSet) -> TokenSet:
        """Exchange the refresh credential for a new token set (which may rotate it)."""

    def find_post(
        self, draft: PostDraft, account: Account, tokens: TokenSet, since: datetime
    ) -> Lookup:
        """Look for the post of ``draft`` created at or after ``since``, for reconciliation:
        :class:`Found`, :class:`Absent` only with proof, otherwise :class:`Unknown`. A failed
        call raises, like every method; the caller treats that as unknown too."""

    def fetch_metrics(self, external_id: str, account: Account, tokens: TokenSet) -> PostMetrics:
        """The post's engagement figures as the network reports them."""

    def authorize(
        self, redirect_uri: str, state: str, scopes: tuple[str, ...] = ()
    ) -> AuthorizeRequest:
        """Build the user's authorization request (with PKCE where the network uses it)."""

    def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, Account]:
        """Turn an authorization code into tokens and the account they belong to."""
