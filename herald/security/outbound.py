"""The one HTTP client for URLs that users supply: alert receivers now, integrators' webhooks
and media downloads later. It refuses server-side request forgery.

What it enforces, for the first request and every redirect alike:

- only ``http`` and ``https`` URLs, without credentials in them;
- every address the host name resolves to is checked, and the connection is made to one of
  those checked addresses (the socket is opened here, after the check, so DNS cannot answer
  differently between the check and the connect — no rebinding window). TLS still verifies
  the certificate against the host name;
- refused: loopback, private (RFC 1918, unique-local IPv6), link-local, shared (CGNAT
  100.64/10, where Alibaba's metadata service lives), multicast, unspecified, reserved and
  documentation ranges — any address that is not globally routable — and the cloud metadata
  addresses by name (169.254.169.254, fd00:ec2::254, 100.100.100.200…). IPv4-mapped,
  IPv4-compatible, 6to4 and NAT64 IPv6 addresses are judged by the IPv4 address inside;
- environment proxies are ignored (a proxy would connect on our behalf, unchecked);
- a request and its answer's status line and headers, redirects included, come within the
  client's timeout in all, not per read: a receiver trickling its answer a byte at a time
  cannot hold the caller (the body, read by the caller, is the caller's to bound);
- no cookie is kept (:func:`cookieless`): the client is shared by every workspace, and a
  cookie one receiver set would go back with another workspace's delivery to the same host;
- its spans name the destination's origin only (:data:`~herald.telemetry.spans.OPAQUE_URL`):
  the path of a URL a user gave may be its secret (a Slack incoming webhook's is);
- a redirect that would turn a POST into a bodiless GET (301, 302, 303) is refused: a
  receiver's landing page answering that GET would count as a delivered event; 307 and 308,
  which keep the method and body, are followed;
- a redirect's own body is read up to :data:`MAX_REDIRECT_BODY` bytes: httpx reads it
  before following the redirect, and one that never ended held the caller for as long as it
  flowed. A longer one is refused.

A host listed in ``HERALD_OUTBOUND_ALLOW_HOSTS`` (exact host name or IP literal) is trusted
with any address: that is how a deployment reaches an in-cluster Alertmanager, and how tests
reach their local receivers.

:func:`client` returns an ``httpx.Client``, so callers stream (``client.stream(...)``) as
with any httpx client; a refused destination raises :class:`DestinationRefused`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from herald.providers.bounded import DeadlineBackend, call_deadline, cookieless
from herald.settings import Settings
from herald.telemetry.spans import OPAQUE_URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: The largest redirect body followed (httpx reads it; what it says is never used).
MAX_REDIRECT_BODY = 65_536
#: Redirects an HTTP client follows with a GET whatever the request's method was (RFC 9110
#: 15.4: 301 and 302 by custom, 303 by definition); 307 and 308 keep the method and body.
_METHOD_CHANGING = frozenset({301, 302, 303})
_KEPT_ON_ANY_REDIRECT = frozenset({"GET", "HEAD"})
Resolver = Callable[[str, int], Sequence[str]]


# Named explicitly (most are also non-global) so a change in Python's tables cannot open them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(httpx.RequestError):
    """The URL, or an address it resolves to, is not one Herald may call."""

    def __init__(self, reason: str, request: httpx.Request | None = None) -> None:
        super().__init__(reason, request=request)
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(int(address))
    return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return f"{address} has a scope (link-local)"
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = refusal(inner)
            return f"{address} embeds {inner}: {reason}" if reason else None
    kind = _kind(address)
    return f"{address} is {kind}" if kind else None


def _kind(address: IPAddress) -> str | None:
    """What kind of address may not be called (``a private address``), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "a scoped (link-local) address"
        inner = _embedded_ipv4(address)
        if inner is not None:
            return _kind(inner)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind in ("loopback", "private", "link_local", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "an address that is not globally routable"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


MAX_PORT = 65_535


def _loose_ipv4(host: str) -> bool:
    """Whether the C resolver would take ``host`` for an IPv4 address (``inet_aton``'s forms)."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


_INVALID_NAME = (
    "not a valid host name (labels of 1 to 63 characters, 253 in all): no resolver takes it"
)


def _valid_name(host: str) -> bool:
    """Whether ``host`` (as httpx holds it: IDNA-encoded, lower-case) is a name a resolver
    takes: labels of 1 to 63 characters, 253 in all (a trailing dot allowed)."""
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split("."))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    allow_hosts: frozenset[str] = frozenset()
    resolver: Resolver = system_resolver
    schemes: frozenset[str] = field(default_factory=lambda: frozenset({"http", "https"}))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolver: Resolver | None = None
    ) -> OutboundPolicy:
        hosts = frozenset(h.strip().lower().strip("[]") for h in settings.outbound_allow_hosts)
        return cls(hosts, resolver or system_resolver)

    def allowed_host(self, host: str) -> bool:
        return host.lower().strip("[]") in self.allow_hosts

    def check_url(self, url: httpx.URL) -> None:
        """Refuse what can be refused from the URL alone (scheme, credentials, IP literals)."""
        if url.scheme not in self.schemes:
            raise DestinationRefused(f"scheme {url.scheme or '(none)'!r} is not http or https")
        if url.userinfo:
            raise DestinationRefused("credentials in the URL are not accepted")
        if not url.host:
            raise DestinationRefused("the URL has no host")
        if _literal(url.host) is None and not _valid_name(url.host):
            raise DestinationRefused(_INVALID_NAME)
        if url.port is not None and not 0 < url.port <= MAX_PORT:
            raise DestinationRefused(f"port {url.port} is not a TCP port (1 to {MAX_PORT})")
        literal = _literal(url.host)
        if literal is None and _loose_ipv4(url.host):
            # The resolver would read 2130706433, 0x7f.1 or 127.1 as 127.0.0.1 (and 0x8.010.0.1
            # as 8.8.0.1): refused here rather than stored and refused, or misread, later.
            raise DestinationRefused(
                "an IPv4 address in a non-canonical form (decimal, octal, hex or shortened): "
                "write it as four decimal numbers"
            )
        if literal is not None and not self.allowed_host(url.host):
            reason = refusal(literal)
            if reason:
                raise DestinationRefused(f"refused destination: {reason}")

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; refuses if any is forbidden."""
        literal = _literal(host)
        if literal is not None:
            found = [str(literal)]
        else:
            if not _valid_name(host):
                raise DestinationRefused(_INVALID_NAME)
            try:
                found = list(self.resolver(host, port))
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
            except (UnicodeError, ValueError):  # what the resolver's IDNA step cannot encode
                raise DestinationRefused(_INVALID_NAME) from None
        if not found:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if self.allowed_host(host):
            return found
        for text in found:
            kind = _kind(ipaddress.ip_address(text.split("%")[0]))
            if kind:
                # The kind only, never the address: whoever may register a URL must not map
                # the internal network's addresses name by name.
                raise DestinationRefused(f"refused destination {host}: it resolves to {kind}")
        return found


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks, then connects to a checked address: one step, no second lookup."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self._policy.addresses(host, port):
            try:
                return self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise DestinationRefused("unix sockets are not an outbound destination")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx builds its pool without a way to pass a network backend; this one is the same
        # pool with the guarded backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            network_backend=DeadlineBackend(_GuardedBackend(policy)),
        )


class _BoundedRedirectBody(httpx.SyncByteStream):
    """A redirect's body as it arrives, refused past :data:`MAX_REDIRECT_BODY` bytes."""

    def __init__(self, inner: httpx.SyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        for chunk in self._inner:
            size += len(chunk)
            if size > MAX_REDIRECT_BODY:
                raise DestinationRefused(
                    f"a redirect with a body of more than {MAX_REDIRECT_BODY} bytes",
                    request=self._request,
                )
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _Client(httpx.Client):
    """An ``httpx.Client`` whose every send (redirects included) shares one deadline."""

    def __init__(self, budget_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._budget_s = budget_s

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        with call_deadline(self._budget_s):
            return super().send(request, **kwargs)


def client(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` that refuses forbidden destinations (see the module docstring)."""
    policy = OutboundPolicy.from_settings(settings, resolver=resolver)

    def check(request: httpx.Request) -> None:
        policy.check_url(request.url)
        request.extensions[OPAQUE_URL] = True  # its span keeps the origin only

    def checked_redirect(response: httpx.Response) -> None:
        if not response.has_redirect_location:
            return
        method, status = response.request.method, response.status_code
        if method not in _KEPT_ON_ANY_REDIRECT and status in _METHOD_CHANGING:
            raise DestinationRefused(
                f"the receiver redirects with {status}, which would send the {method} again as "
                "a GET without its body: give the URL it redirects to",
                request=response.request,
            )
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _BoundedRedirectBody(response.stream, response.request)

    budget_s = timeout or settings.outbound_timeout_s
    return _Client(
        budget_s,
        transport=_GuardedTransport(policy),
        timeout=httpx.Timeout(budget_s),
        follow_redirects=True,
        max_redirects=settings.outbound_max_redirects,
        trust_env=False,
        cookies=cookieless(),
        headers={"User-Agent": settings.user_agent, **(headers or {})},
        event_hooks={"request": [check], "response": [checked_redirect]},
    )
