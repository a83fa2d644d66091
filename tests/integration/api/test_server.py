"""The API as `herald api` serves it: a real uvicorn server on a free port. What uvicorn refuses
before the application sees the request answers in the documented error format too."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine

from herald.api import create_app
from herald.api.app import MAX_HEADER_BYTES
from herald.api.server import server_config
from herald.settings import get_settings
from tests.fixtures.polling import eventually

#: How long the served API waits for a request to arrive (short, so the timeout tests are quick).
REQUEST_TIMEOUT_S = 1.0


@pytest.fixture
def served_api(committed: Engine) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: the API served by uvicorn in a thread, as `herald api` does."""
    settings = get_settings().model_copy(update={"api_request_timeout_s": REQUEST_TIMEOUT_S})
    server = uvicorn.Server(server_config(create_app(settings), settings, "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
    assert server.started, "uvicorn stopped while starting"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


def assert_error_body(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["correlation_id"] == response.headers["X-Correlation-ID"]
    return dict(error)


def raw_exchange(
    base_url: str, request: bytes, *, trickle: bytes = b"", every_s: float = 0.0
) -> httpx.Response:
    """Send bytes no HTTP client would (then ``trickle`` a byte every ``every_s`` while the
    server listens), and parse the server's answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server answered and closed: read what it said
                break
            if select.select([sock], [], [], every_s)[0]:
                break
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


@pytest.mark.parametrize(
    "padding",
    [
        pytest.param(MAX_HEADER_BYTES + 1, id="just over: the head arrives whole"),
        pytest.param(MAX_HEADER_BYTES * 8, id="far over: uvicorn's parser refuses it"),
    ],
)
def test_a_request_head_over_the_limit_is_431_in_the_error_format(
    served_api: str, padding: int
) -> None:
    big = {"X-Padding": "p" * padding}

    response = httpx.get(f"{served_api}/healthz", headers=big)

    error = assert_error_body(response, 431, "headers_too_large")
    assert error["details"] == {"max_bytes": MAX_HEADER_BYTES}
    assert response.reason_phrase == "Request Header Fields Too Large"


def test_a_malformed_request_line_is_400_in_the_error_format(served_api: str) -> None:
    response = raw_exchange(served_api, b"NOT AN HTTP REQUEST\r\n\r\n")

    assert_error_body(response, 400, "bad_request")
    json.loads(response.content)


def test_headers_under_the_limit_reach_the_application(served_api: str) -> None:
    padding = {"X-Padding": "p" * (MAX_HEADER_BYTES // 2)}

    response = httpx.get(f"{served_api}/healthz", headers=padding)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_options_over_the_wire_answers_allow(served_api: str) -> None:
    response = httpx.options(f"{served_api}/api/postiz/posts")

    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, OPTIONS, POST"


def test_a_wrong_method_over_the_wire_is_405_with_allow(served_api: str) -> None:
    response = httpx.put(f"{served_api}/healthz")

    assert_error_body(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, OPTIONS"


@pytest.mark.parametrize(
    ("sent", "trickled"),
    [
        pytest.param(b"", b"", id="a connection that sends nothing"),
        pytest.param(b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"s" * 40, id="a trickled head"),
    ],
)
def test_a_request_head_that_does_not_arrive_in_time_is_408(
    served_api: str, sent: bytes, trickled: bytes
) -> None:
    """Each byte comes well within any per-read timeout, the head never completes: without a
    deadline every such connection was held open for good (a few thousand exhaust the
    server's file descriptors)."""
    started = time.monotonic()
    response = raw_exchange(served_api, sent, trickle=trickled, every_s=0.2)

    assert_error_body(response, 408, "request_timeout")
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3


def test_a_request_body_that_does_not_arrive_in_time_is_408(served_api: str) -> None:
    head = (
        b"POST /api/postiz/posts HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer x\r\nContent-Length: 100\r\n\r\n"
    )
    started = time.monotonic()
    response = raw_exchange(served_api, head, trickle=b"{" + b" " * 98, every_s=0.2)

    assert_error_body(response, 408, "request_timeout")
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param(100, id="a body that stops coming: 408"),
        pytest.param(10_000_000, id="a body over the size cap: 413"),
    ],
)
def test_an_answer_sent_while_the_body_still_comes_is_not_destroyed_by_a_reset(
    served_api: str, declared: int
) -> None:
    """A client still sending when the server answers early sees the answer, not a reset.
    Closing a socket with unread bytes makes the kernel answer the next byte with RST, and a
    reset discards what the client had not read yet: the 408 of a trickled body was lost that
    way now and then. The server half-closes, drains and closes later instead."""
    host, port = served_api.removeprefix("http://").split(":")
    head = (
        b"POST /api/postiz/posts HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer x\r\nContent-Length: " + str(declared).encode() + b"\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"{")
        chunk = b" " * 65536
        while not select.select([sock], [], [], 0.05)[0]:
            if declared > 100:
                sock.sendall(chunk)
        # The client has not read the answer yet and keeps sending, as a slow client does.
        for _ in range(20):
            sock.sendall(b" ")
        received = b""
        while part := sock.recv(65536):
            received += part

    assert received.startswith(b"HTTP/1.1 4"), received[:200]
    status = int(received.split()[1])
    assert status == (408 if declared == 100 else 413)
    assert b'"error"' in received


def test_the_next_request_on_a_kept_alive_connection_has_the_same_time(served_api: str) -> None:
    """uvicorn's keep-alive timeout ends once a byte of the next request comes; from there the
    head has the request timeout, as on a new connection."""
    host, port = served_api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
        first = b""
        while b'"ok"}' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        answer = b""
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"s" * 40:
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.2)[0]:
                break
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3
