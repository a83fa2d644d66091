"""Serving the sandbox: on a background thread for tests and the demo, or in the foreground
for ``herald sandbox``. Loopback only by default.

    with run_in_thread() as server:          # port 0: any free port
        settings = Settings(sandbox_url=server.url)
        server.sandbox.posts                 # in-process view of the state
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from herald.sandbox.app import SandboxApp, create_app
from herald.sandbox.core import Sandbox, SandboxNetwork


def _drop_hook(server: uvicorn.Server) -> Any:
    """Abort the TCP connection that carried ``scope`` (no answer at all)."""

    def drop(scope: Any) -> bool:
        client = scope.get("client")
        for connection in list(server.server_state.connections):
            if tuple(getattr(connection, "client", None) or ()) == tuple(client or ()):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
                    return True
        return False

    return drop


def _config(app: SandboxApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        http="h11",
        timeout_graceful_shutdown=1,
    )


class SandboxServer:
    """A sandbox served by uvicorn on a daemon thread. Use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        *,
        networks: dict[str, SandboxNetwork] | None = None,
    ) -> None:
        self.app = create_app(networks)
        self.sandbox: Sandbox = self.app.sandbox
        self._server = uvicorn.Server(_config(self.app, host, port, log_level))
        self.app.drop_hook = _drop_hook(self._server)
        self._thread = threading.Thread(target=self._run, name="herald-sandbox", daemon=True)
        self.host = host
        self.port = port

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self, timeout_s: float = 10.0) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the provider sandbox did not start")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, networks: dict[str, SandboxNetwork] | None = None
) -> SandboxServer:
    """Start a sandbox on a background thread and return it once it accepts connections.
    ``networks`` replaces the registered networks (tests of the core use their own)."""
    return SandboxServer(host, port, networks=networks).start()


def main(host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the sandbox in the foreground until interrupted (``herald sandbox``)."""
    app = create_app()
    server = uvicorn.Server(_config(app, host, port, "info"))
    app.drop_hook = _drop_hook(server)
    server.run()
