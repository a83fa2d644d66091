"""The outbound client refuses server-side request forgery, before any connection is made.

Every refusal here happens without a packet leaving for the refused address: literals and
schemes are refused from the URL, names from what they resolve to (an injected resolver, so
no DNS is involved), redirects hop by hop. Allowed requests go to a real server on loopback,
allow-listed as the tests of receivers do.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from herald.security import outbound
from herald.security.outbound import DestinationRefused, refusal
from herald.settings import Settings

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "fd12:3456::1",
    "169.254.1.1",
    "fe80::1",
    "169.254.169.254",  # AWS / GCP / Azure metadata
    "169.254.170.2",  # ECS task metadata
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata
    "192.0.0.192",  # Oracle metadata
    "100.64.0.1",  # shared address space (CGNAT)
    "224.0.0.1",
    "ff02::1",
    "0.0.0.0",
    "::",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.10",  # documentation
    "2001:db8::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
]
ALLOWED = ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", REFUSED)
def test_forbidden_ranges_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


class _Handler(BaseHTTPRequestHandler):
    hits: list[str]  # set per server
    redirect_to: str | None

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.redirect_to and self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


class Local:
    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"hits": [], "redirect_to": None})
        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def hits(self) -> list[str]:
        return self.handler.hits  # type: ignore[no-any-return]

    def redirect(self, to: str) -> None:
        self.handler.redirect_to = to


@pytest.fixture
def local() -> Iterator[Local]:
    server = Local()
    yield server
    server.server.shutdown()
    server.server.server_close()


def settings(*allow: str) -> Settings:
    return Settings(env="development", outbound_allow_hosts=list(allow), outbound_timeout_s=2)


def resolving(table: dict[str, Sequence[str]]) -> outbound.Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return resolve


def test_loopback_is_refused_without_the_allow_list(local: Local) -> None:
    with outbound.client(settings()) as http, pytest.raises(DestinationRefused, match="loopback"):
        http.get(f"http://127.0.0.1:{local.port}/")
    assert local.hits == []


def test_an_allow_listed_host_is_reached(local: Local) -> None:
    with outbound.client(settings("127.0.0.1")) as http:
        assert http.get(f"http://127.0.0.1:{local.port}/x").text == "ok"
    assert local.hits == ["/x"]


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/file", "file:///etc/passwd", "gopher://example.com/", "ws://example.com/"],
)
def test_only_http_and_https(url: str) -> None:
    with outbound.client(settings()) as http, pytest.raises(DestinationRefused, match="scheme"):
        http.get(url)


def test_credentials_in_the_url_are_refused() -> None:
    with outbound.client(settings()) as http, pytest.raises(DestinationRefused, match="cred"):
        http.get("https://user:pass@example.com/")


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "169.254.169.254", "fd00:ec2::254", "::ffff:127.0.0.1"]
)
def test_a_name_resolving_to_a_forbidden_address_is_refused(address: str) -> None:
    """Refused, saying what kind of address the name resolves to but not which one: a user
    who may register webhooks must not learn the internal network's addresses by name."""
    resolver = resolving({"internal.example": [address]})
    with (
        outbound.client(settings(), resolver=resolver) as http,
        pytest.raises(
            DestinationRefused, match=r"refused destination internal\.example: it resolves to a"
        ) as refused,
    ):
        http.get("http://internal.example/")
    assert address not in str(refused.value)
    assert "127.0.0.1" not in str(refused.value)


def test_every_resolved_address_is_checked() -> None:
    resolver = resolving({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    with (
        outbound.client(settings(), resolver=resolver) as http,
        pytest.raises(
            DestinationRefused, match=r"mixed\.example: it resolves to a private address"
        ),
    ):
        http.get("https://mixed.example/")


def test_numeric_host_spellings_are_judged_by_what_they_resolve_to(local: Local) -> None:
    # 2130706433 and 127.1 are 127.0.0.1 to the system resolver (no DNS is involved).
    with outbound.client(settings()) as http:
        for host in ("2130706433", "127.1", "0x7f.0.0.1"):
            with pytest.raises(DestinationRefused):
                http.get(f"http://{host}:{local.port}/")
    assert local.hits == []


@pytest.mark.parametrize("host", ["134744072", "0x8.8.8.8", "8.8.2056", "0x8.0x8.010.010"])
def test_a_public_address_in_a_non_canonical_form_is_refused_from_the_url(host: str) -> None:
    """The C resolver reads each as 8.8.8.8 (octal 010 is 8): whatever a reader, or another
    service's URL check, takes such a spelling for, Herald does not guess."""
    policy = outbound.OutboundPolicy.from_settings(settings())
    with pytest.raises(DestinationRefused, match="non-canonical"):
        policy.check_url(httpx.URL(f"http://{host}/hook"))


@pytest.mark.parametrize("port", [0, 65_536, 99_999])
def test_a_port_outside_tcp_is_refused_from_the_url(port: int) -> None:
    policy = outbound.OutboundPolicy.from_settings(settings())
    with pytest.raises(DestinationRefused, match="not a TCP port"):
        policy.check_url(httpx.URL(f"https://example.com:{port}/hook"))


def test_a_redirect_to_a_metadata_address_is_refused(local: Local) -> None:
    local.redirect("http://169.254.169.254/latest/meta-data/")
    with (
        outbound.client(settings("127.0.0.1")) as http,
        pytest.raises(DestinationRefused, match="metadata"),
    ):
        http.get(f"http://127.0.0.1:{local.port}/redirect")
    assert local.hits == ["/redirect"]


def test_a_redirect_to_a_name_of_loopback_is_refused(local: Local) -> None:
    local.redirect(f"http://localhost:{local.port}/inside")
    with (
        outbound.client(settings("127.0.0.1")) as http,
        pytest.raises(DestinationRefused, match="localhost"),
    ):
        http.get(f"http://127.0.0.1:{local.port}/redirect")
    assert local.hits == ["/redirect"]


def test_a_redirect_to_another_scheme_is_refused(local: Local) -> None:
    local.redirect("file:///etc/passwd")
    with outbound.client(settings("127.0.0.1")) as http, pytest.raises(DestinationRefused):
        http.get(f"http://127.0.0.1:{local.port}/redirect")


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    local: Local,
) -> None:
    """The name exists nowhere but in the injected resolver: if anything looked it up again
    (httpcore, the OS) the request could not connect."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with outbound.client(settings("receiver.internal"), resolver=resolver) as http:
        response = http.get(f"http://receiver.internal:{local.port}/pinned")
    assert response.status_code == 200
    assert calls == ["receiver.internal"]
    assert local.hits == ["/pinned"]


def test_environment_proxies_are_ignored(local: Local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.9.9.9:3128")
    with outbound.client(settings("127.0.0.1")) as http:
        assert http.get(f"http://127.0.0.1:{local.port}/direct").status_code == 200
    assert local.hits == ["/direct"]


def test_streaming_works_through_the_guard(local: Local) -> None:
    with (
        outbound.client(settings("127.0.0.1")) as http,
        http.stream("GET", f"http://127.0.0.1:{local.port}/stream") as response,
    ):
        assert b"".join(response.iter_bytes()) == b"ok"


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".example.com",  # a label over 63 characters
        "a..example.com",  # an empty label
        ".".join(["abcdefghi"] * 26),  # over 253 characters in all
    ],
)
def test_a_host_name_no_resolver_can_take_is_refused_as_a_destination(host: str) -> None:
    """The C resolver's IDNA step raised UnicodeError for it, which no caller expected: one
    such subscription (or one 307 to such a name) stopped every webhook and alert delivery."""
    with (
        outbound.client(settings()) as http,
        pytest.raises(DestinationRefused, match="not a valid host name"),
    ):
        http.get(f"https://{host}/hook")
    with pytest.raises(DestinationRefused, match="not a valid host name"):
        outbound.OutboundPolicy().check_url(httpx.URL(f"https://{host}/hook"))
