"""Every connection pool of a provider client bounds a call's socket operations by the call's
deadline, the pools an environment proxy adds included (the trickling-answer tests in
tests/integration/providers/test_unreadable_answers.py show the effect over real HTTP)."""

from __future__ import annotations

import socket
import threading
import time

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


class _SlowReader(threading.Thread):
    """A server that reads a request's body at about ``rate`` bytes per second, then answers
    200 (an ingest slower than the client's uplink)."""

    def __init__(self, rate: int) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.rate = rate
        self.received = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def run(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(1024)
            headers, _, body = head.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            self.received = len(body)
            step = self.rate // 20
            while self.received < length:
                chunk = connection.recv(min(step, length - self.received))
                if not chunk:
                    return
                self.received += len(chunk)
                time.sleep(0.05)  # noqa: TID251 -- the fake ingest's pace, not a wait
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def stop(self) -> None:
        self.server.close()


def test_an_upload_gets_its_size_at_the_floor_rate_beyond_one_call() -> None:
    """Each call had connect + read timeout in all, its body's upload included: a large file
    over a slow ingest failed every attempt (and on Telegram or Discord, a write cut off
    mid-body ends the post in review). A request with a body now also gets its size at
    ``HERALD_PROVIDER_UPLOAD_MIN_RATE``."""
    settings = Settings(
        env="development",
        provider_connect_timeout_s=0.2,
        provider_timeout_s=0.3,  # 0.5 s for a call
        provider_upload_min_rate=1_000_000,  # 4 MB: 4 s more
    )
    body = b"\0" * 4_000_000
    server = _SlowReader(rate=2_000_000)  # about 2 s to take it all
    server.start()
    http = ProviderHTTP("telegram", server.url, settings)
    try:
        response = http.request("POST", "/upload", content=body)
    finally:
        http.close()
        server.stop()
    assert response.status_code == 200
    assert server.received == len(body)
