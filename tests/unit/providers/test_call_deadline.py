"""Every connection pool of a provider client bounds a call's socket operations by the call's
deadline, the pools an environment proxy adds included (the trickling-answer tests in
tests/integration/providers/test_unreadable_answers.py show the effect over real HTTP)."""

from __future__ import annotations

import socket

import httpcore
import pytest

from herald.providers.bounded import DeadlineBackend, call_deadline
from herald.providers.http import ProviderHTTP
from herald.settings import Settings


def _pools(http: ProviderHTTP) -> list[httpcore.ConnectionPool]:
    client = http._client
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    return [t._pool for t in transports]  # type: ignore[attr-defined]


def test_every_pool_has_the_deadline_backend_proxies_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    http = ProviderHTTP("x", "https://api.x.example", Settings(env="development"))
    try:
        pools = _pools(http)
        assert len(pools) >= 2  # the default pool and the proxy's
        assert all(isinstance(p._network_backend, DeadlineBackend) for p in pools)
    finally:
        http.close()


def test_a_read_gets_only_what_is_left_of_the_call() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        stream = DeadlineBackend(httpcore.SyncBackend()).connect_tcp("127.0.0.1", port, 1.0)
        try:
            with call_deadline(0.2), pytest.raises(httpcore.ReadTimeout):
                stream.read(1, timeout=30.0)  # nothing comes: the deadline ends it, not 30 s
            with call_deadline(0.0), pytest.raises(httpcore.ReadTimeout, match="ran out"):
                stream.read(1, timeout=30.0)
        finally:
            stream.close()
