"""What every HTTP client of Herald's shares, whoever it calls (a network's API through
:mod:`.http`, a user's URL through :mod:`herald.security.outbound`).

- :func:`cookieless`: a client serves every workspace, and httpx keeps each cookie an answer
  sets and sends it with the next request to that host, whoever's it is; this jar keeps none.
- :func:`call_deadline` and :class:`DeadlineBackend`: httpx's timeouts are per socket
  operation, so an answer whose every piece comes within the read timeout is read for as long
  as it trickles. Under a :class:`DeadlineBackend` (:func:`bound_by_deadline` puts one under a
  client's pools), each read, write and connect inside a :func:`call_deadline` block gets only
  what is left of the call's time, and raises httpcore's own timeout once none is left.
"""

from __future__ import annotations

import http.cookiejar
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that reads no ``Set-Cookie`` and writes no ``Cookie``: not even the policy's
    work of refusing each one is done (about 30 us of every call's CPU)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


def cookieless() -> http.cookiejar.CookieJar:
    """A cookie jar that keeps no cookie and so sends none, for an ``httpx.Client`` shared by
    workspaces (httpx keeps every cookie an answer sets and sends it with the next request to
    that host, whoever's it is)."""
    return _NoCookies()


#: When the call under way must be over (``time.monotonic()``); None outside a call.
_deadline: ContextVar[float | None] = ContextVar("herald_http_deadline", default=None)


@contextmanager
def call_deadline(seconds: float) -> Iterator[None]:
    """Every socket operation inside waits at most until ``seconds`` from now, in all.

    httpx's timeouts are per operation: an answer whose every piece arrives within the read
    timeout is read for as long as it trickles. Inside this block each read, write and connect
    of a client whose pools have a :class:`DeadlineBackend` gets what is left of the call's
    time instead (raising httpcore's own timeout once none is left), so a slow or hostile
    server holds a call no longer than its budget.
    """
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the call's time ran out")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wrapped = self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(wrapped)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """``inner``'s connections, each socket operation bounded by :func:`call_deadline`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bound_by_deadline(client: httpx.Client) -> httpx.Client:
    """``client`` with a :class:`DeadlineBackend` under each of its connection pools (the
    default one and any an environment proxy mounted). httpx offers no way to pass a network
    backend, so this reaches into its transports; should a release move them, it fails here,
    when the client is made, not silently later."""
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if transport is None:  # a NO_PROXY entry
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            raise RuntimeError(f"cannot bound the calls of {type(transport).__name__}")
        pool._network_backend = DeadlineBackend(backend)  # type: ignore[union-attr]
    return client
