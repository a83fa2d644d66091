"""Prometheus exposition of a process's instruments: the worker's (and beat's) metrics port.

A Celery worker node is a parent process and its prefork children; each records its own
counts. prometheus_client's multiprocess mode makes them add up: every process writes its
values to memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``) and the scrape
merges the files. ``herald worker`` calls :func:`use_multiprocess_dir` before anything imports
prometheus_client, then :func:`serve` starts the HTTP server in the parent. The directory is
fresh per node (a node's counters start at zero, which ``rate()`` expects of a restart), and the
files of pool processes that are gone are cleaned with ``mark_process_dead``: their counters
stay (a count must not go back), their live gauges go.

The server answers ``/metrics`` (``Authorization: Bearer <HERALD_METRICS_TOKEN>`` required
when that is set, compared in constant time) and ``/healthz`` (liveness, no authentication).
"""

from __future__ import annotations

import hmac
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from herald.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_SUFFIX = re.compile(r"_(\d+)\.db$")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MultiprocessTooLate(RuntimeError):
    """prometheus_client was imported before its multiprocess directory was chosen."""


def metrics_base_dir(settings: Settings) -> Path:
    return Path(settings.metrics_dir or Path(tempfile.gettempdir()) / "herald-metrics")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_multiprocess_dir(settings: Settings, environ: MutableMapping[str, str]) -> Path:
    """Create this node's fresh metrics directory and point prometheus_client at it.

    ``environ`` is the process environment: prometheus_client reads the directory from it, and
    pool children inherit it. Directories left by nodes that no longer run are removed.
    """
    if "prometheus_client" in sys.modules:
        raise MultiprocessTooLate("prometheus_client is already imported; choose the dir first")
    base = metrics_base_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("node-*"):
        pid = stale.name.removeprefix("node-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    mine = base / f"node-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    environ[MULTIPROC_ENV] = str(mine)
    return mine


def _multiprocess_dir() -> str | None:
    from prometheus_client import values

    # The value class prometheus_client chose at import says whether files are being written.
    return os.environ.get(MULTIPROC_ENV) if values.ValueClass is not values.MutexValue else None


def forget_dead_processes(path: str) -> None:
    """``mark_process_dead`` for every process that wrote here and no longer runs."""
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for f in os.listdir(path) if (m := _PID_SUFFIX.search(f))}
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


# -- pool processes -----------------------------------------------------------------------------

_pool_processes: Any = None


def _pool_gauge() -> Any:
    global _pool_processes  # noqa: PLW0603 - one gauge per process, made on first use
    if _pool_processes is None:
        import prometheus_client

        from herald.telemetry.metrics import REGISTRY

        _pool_processes = prometheus_client.Gauge(
            "herald_worker_pool_processes",
            "Pool processes of this worker node that are alive.",
            registry=REGISTRY,
            multiprocess_mode="livesum",
        )
    return _pool_processes


def pool_process_started() -> None:
    _pool_gauge().set(1)


def pool_process_exited(pid: int) -> None:
    """A pool process ends: its live gauges go (its counters stay, summed into the node's)."""
    path = _multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


# -- exposition ---------------------------------------------------------------------------------


def exposition_app() -> WsgiApp:
    """The WSGI app that renders this node's metrics: every process's files in multiprocess
    mode, else this process's registry."""
    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

    from herald.telemetry.metrics import REGISTRY

    path = _multiprocess_dir()
    if path is None:
        return make_wsgi_app(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    render = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        forget_dead_processes(path)
        rendered: Iterable[bytes] = render(environ, start_response)
        return rendered

    return app


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header satisfies the metrics token (open when unset)."""
    if not token:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def guarded(app: WsgiApp, token: str | None) -> WsgiApp:
    """``app`` behind the metrics token, plus an open ``/healthz``."""

    def guard(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"a valid metrics bearer token is required\n"]
        return app(environ, start_response)

    return guard


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line."""


class MetricsPortUnavailable(RuntimeError):
    """The metrics port cannot be served (another process holds it, or no such address)."""


def serve(settings: Settings) -> WSGIServer | None:
    """Serve this node's metrics on ``HERALD_METRICS_PORT`` in a daemon thread (None: off).
    Raises :class:`MetricsPortUnavailable` when the port cannot be bound."""
    if not settings.metrics_port:
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    where = f"{settings.metrics_host}:{settings.metrics_port}"
    try:
        server = make_server(
            settings.metrics_host,
            settings.metrics_port,
            guarded(exposition_app(), token),
            server_class=_Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {where}: {exc.strerror or exc} (HERALD_METRICS_PORT: each "
            "process on a host needs a port of its own; another Herald process may hold this one)"
        ) from None
    threading.Thread(target=server.serve_forever, name="herald-metrics", daemon=True).start()
    return server
