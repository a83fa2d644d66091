"""The one HTTP path every provider call takes.

It owns what is the same for every network: timeouts, the User-Agent, latency and request-id
recording, log lines without secrets, and the translation of transport failures into the
taxonomy. Retries inside one attempt happen here, with tenacity, and only where repeating is
provably safe: the request never reached the server (connect failures), or the call is a read.
Everything else crosses to Celery as a single :class:`TransientError` or
:class:`AmbiguousOutcome`, so attempts never multiply.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import structlog
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from herald.providers import fence
from herald.providers.base import (
    AmbiguousOutcome,
    AuthExpired,
    ConfigurationError,
    PermanentError,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from herald.providers.bounded import bound_by_deadline, call_deadline, cookieless
from herald.redaction import redact_url
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.providers.http")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The most of an answer Herald reads (decoded). A network's answers are kilobytes; a longer
#: one is not read on: it counts as a read that failed after the request was sent.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class _NeverArrived(Exception):
    """The connection failed before a byte of the request was sent."""


class _RetryableRead(Exception):
    """A read (safe method) failed transiently; repeating it cannot change anything."""

    def __init__(self, error: TransientError) -> None:
        super().__init__(str(error))
        self.error = error


class _AnswerTooLarge(Exception):
    """The answer went on past :data:`MAX_ANSWER_BYTES`."""


def _read_bounded(response: httpx.Response) -> httpx.Response:
    """``response`` read (or a copy holding its body) if it is within the bound."""
    length = response.headers.get("content-length", "")
    declared = length.isdigit() and int(length) <= MAX_ANSWER_BYTES
    if declared and "content-encoding" not in response.headers:
        response.read()  # as declared: the HTTP parser holds the server to its length
        return response
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():  # decoded, so a compressed answer is bounded too
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _AnswerTooLarge(f"an answer of more than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    # The body is decoded now: the copy must not claim an encoding or the wire's length.
    headers = [
        (key, value)
        for key, value in response.headers.multi_items()
        if key not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=b"".join(chunks), request=response.request
    )


#: ``request`` arguments httpx takes when sending, not when building the request.
_SEND_OPTIONS = ("auth", "follow_redirects")
#: A body at least this large is an upload: it gets its size at the floor rate beyond one call.
UPLOAD_BYTES = 256 * 1024


class ProviderHTTP:
    """An httpx client bound to one network's base URL, with Herald's policies applied."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        in_call_attempts: int = 3,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        # Retried inside one call: what never reached the network, and a read that failed.
        self._retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _NeverArrived | _RetryableRead)),
            stop=stop_after_attempt(in_call_attempts),
            wait=wait_random_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        # Connect and read timeouts, once each: all one call may take (the task's soft time
        # limit is checked against the same sum).
        self._budget_s = settings.provider_connect_timeout_s + settings.provider_timeout_s
        self._upload_rate = settings.provider_upload_min_rate
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                settings.provider_timeout_s, connect=settings.provider_connect_timeout_s
            ),
            headers={"User-Agent": settings.user_agent},
            transport=transport,
            follow_redirects=False,
            cookies=cookieless(),  # one client serves every workspace's accounts
        )
        if transport is None:
            bound_by_deadline(self._client)

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        request_id_header: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; return any HTTP response, raise only taxonomy errors.

        ``url`` is a path under the base URL or an absolute URL (per-instance networks).
        ``idempotent`` defaults to whether the method is safe; pass True for a write that
        carries a server-honoured idempotency key, so a lost answer can be asked again.
        """
        method = method.upper()
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        try:
            # One Retrying per client: its per-call state is thread-local.
            return self._retrying(self._send_once, method, url, safe, request_id_header, kwargs)
        except _NeverArrived as exc:
            raise TransientError(
                f"could not reach {self.provider}: {exc}", provider=self.provider
            ) from exc
        except _RetryableRead as exc:
            raise exc.error from exc

    def _upload_allowance(self, request: httpx.Request) -> float:
        """The time a request's body may take to send beyond one call's budget: its size at
        ``HERALD_PROVIDER_UPLOAD_MIN_RATE`` (a file's upload in one request: Bluesky's blob,
        Telegram's video, Discord's files)."""
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) < UPLOAD_BYTES:
            return 0.0  # a JSON or form body: one call's budget
        return int(length) / self._upload_rate

    def _send_once(
        self,
        method: str,
        url: str,
        safe: bool,
        request_id_header: str | None,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        if method not in SAFE_METHODS:
            fence.check()  # a publish run's claim may have lapsed while its worker was paused
        # Telegram's token and Discord's webhook token live in the path, Threads' in the query.
        path = redact_url(url.replace(self.base_url, "") if url.startswith("http") else url)
        started = time.perf_counter()
        status: int | str = "error"
        try:
            sending = {key: kwargs[key] for key in _SEND_OPTIONS if key in kwargs}
            building = {key: value for key, value in kwargs.items() if key not in _SEND_OPTIONS}
            request = self._client.build_request(method, url, **building)
            allowance = self._upload_allowance(request)
            if allowance:
                # The body's writes, and the wait for the answer while the network still takes
                # in what the socket buffered, are bounded by the call's time, not one read's.
                whole = self._budget_s + allowance
                request.extensions["timeout"] = {
                    **request.extensions["timeout"],
                    "write": whole,
                    "read": whole,
                }
            with call_deadline(self._budget_s + allowance):
                streamed = self._client.send(request, stream=True, **sending)
                try:
                    status = streamed.status_code
                    response = _read_bounded(streamed)
                finally:
                    streamed.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _NeverArrived(type(exc).__name__) from exc
        except (
            httpx.TimeoutException,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            _AnswerTooLarge,
        ) as exc:
            # The request went out; whether the network applied it is unknown.
            failed = exc if isinstance(exc, _AnswerTooLarge) else type(exc).__name__
            what = f"{failed} after the request was sent"
            if safe:
                raise _RetryableRead(TransientError(what, provider=self.provider)) from exc
            raise AmbiguousOutcome(what, provider=self.provider) from exc
        except httpx.InvalidURL as exc:
            # Built from a malformed value in an earlier answer (an id with control characters):
            # nothing was sent, and the next attempt may get a usable answer.
            raise TransientError(
                f"cannot call {self.provider}: a value in its answer made an unusable URL",
                provider=self.provider,
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientError(
                f"{type(exc).__name__} calling {self.provider}", provider=self.provider
            ) from exc
        finally:
            elapsed = time.perf_counter() - started
            metrics.provider_request_duration.record(
                elapsed, {"provider": self.provider, "method": method, "status": str(status)}
            )
        request_id = response.headers.get(request_id_header) if request_id_header else None
        # At DEBUG when it went through: a publish's one INFO line is publish.attempt.
        (log.debug if response.status_code < 400 else log.info)(
            "provider.http",
            provider=self.provider,
            method=method,
            path=path,
            status=response.status_code,
            latency_ms=round(elapsed * 1000, 1),
            provider_request_id=request_id,
        )
        if safe and response.status_code >= 500:
            raise _RetryableRead(
                TransientError(
                    f"HTTP {response.status_code} on a read",
                    provider=self.provider,
                    http_status=response.status_code,
                    request_id=request_id,
                )
            )
        return response


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or None when the body is empty, not JSON, not decodable, or nested
    deeper than the parser goes (RecursionError: a hostile or broken answer)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    idempotent: bool,
    reset_at: datetime,
    token_endpoint: bool = False,
    **details: Any,
) -> ProviderError:
    """The plain-HTTP ladder most networks follow, once their message and code are read:
    429 → rate limited until ``reset_at``; on the token endpoint a refused client (see
    :func:`client_refused`) → Herald's configuration error, another 400 → the grant is dead;
    401 → access token refused; other 4xx → permanent; 5xx → see :func:`server_status_error`."""
    kw: dict[str, Any] = {"provider": provider, "http_status": status, **details}
    if status == 429:
        return RateLimited(message, reset_at=reset_at, **kw)
    if token_endpoint and client_refused(status, details.get("provider_code")):
        return ConfigurationError(f"{provider} refused Herald's OAuth client: {message}", **kw)
    if token_endpoint and status == 400:
        return ReauthRequired(message, **kw)
    if status == 401:
        return AuthExpired(message, **kw)
    if 400 <= status < 500:
        return PermanentError(message, **kw)
    return server_status_error(status, message, idempotent=idempotent, **kw)


#: OAuth error codes (RFC 6749 §5.2) that blame the client, not the grant.
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def client_refused(status: int, oauth_error: object) -> bool:
    """Whether a token endpoint's answer refuses Herald's OAuth client rather than the user's
    grant: ``invalid_client`` / ``unauthorized_client``, or a 401 (which RFC 6749 reserves for
    failed client authentication; a dead grant is a 400)."""
    return status == 401 or oauth_error in CLIENT_ERRORS


def server_status_error(status: int, message: str, *, idempotent: bool, **kw: Any) -> ProviderError:
    """Classify a 5xx answer. 503 means the server did not take the request; for any other
    5xx to a write the network cannot de-duplicate, the post may exist: that is ambiguous."""
    cls: type[ProviderError] = TransientError if idempotent or status == 503 else AmbiguousOutcome
    return cls(message, **kw)


def server_error(
    provider: str,
    response: httpx.Response,
    *,
    idempotent: bool,
    message: str | None = None,
    request_id: str | None = None,
) -> ProviderError:
    """:func:`server_status_error` for a response."""
    status = response.status_code
    return server_status_error(
        status,
        message or f"HTTP {status} from {provider}",
        idempotent=idempotent,
        provider=provider,
        http_status=status,
        request_id=request_id,
    )
