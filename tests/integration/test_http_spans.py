"""Herald's outbound HTTP spans (herald/telemetry/http_spans.py) are the httpx
instrumentation's own: the same requests — answered 200, 404 and 503, with a query string, with
a token in the path, to a user's opaque URL, refused, timed out — made once under the
instrumentation and once under ``HTTPSpans``, each in a fresh process, give spans alike in
scope, name, kind, attributes, status and exception events, and the server receives the same
trace context headers. What ``HTTPSpans`` keeps of the URLs it saw holds no secret."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

MODES = ("instrumentation", "herald")
_PORT = re.compile(r"127\.0\.0\.1:\d+")  # each process's servers have their own ports


def _probe(mode: str) -> None:
    """Run the requests in this process under ``mode``; print what the spans and server saw."""
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from herald.telemetry.http_spans import HTTPSpans
    from herald.telemetry.spans import OPAQUE_URL, redact_http_request

    received: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            received.append({k.lower(): v for k, v in self.headers.items()})
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status = 404 if "missing" in self.path else 503 if "busy" in self.path else 200
            body = b'{"id": "1"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *_: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections into its backlog, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    instrumentor = HTTPXClientInstrumentor() if mode == "instrumentation" else HTTPSpans()
    instrumentor.instrument(
        tracer_provider=provider,
        meter_provider=NoOpMeterProvider(),
        request_hook=redact_http_request,
    )
    base = f"http://127.0.0.1:{server.server_port}"
    tracer = provider.get_tracer("probe")
    with httpx.Client(timeout=0.2) as client, tracer.start_as_current_span("task"):
        for _ in range(2):  # the second time from what was kept
            client.post(f"{base}/mastodon/api/v1/statuses", json={"status": "hi"})
        client.get(f"{base}/missing")
        client.post(f"{base}/busy", content=b"x")
        client.get(f"{base}/me?fields=id&access_token=tok-secret")
        client.post(f"{base}/bot123456:AAsecret/sendMessage", json={"text": "x"})
        # A URL a user gave (a Slack incoming webhook: the path is the secret, no rule sees it)
        client.post(f"{base}/services/T0/B0/opaquesecret", json={}, extensions={OPAQUE_URL: True})
        for target in (
            f"http://127.0.0.1:{refused_port}/",
            f"http://127.0.0.1:{silent.getsockname()[1]}/",
        ):
            with pytest.raises(httpx.TransportError):
                client.get(target)
    instrumentor.uninstrument()
    server.shutdown()
    silent.close()

    spans = []
    for span in exported.get_finished_spans():
        scope = span.instrumentation_scope
        spans.append(
            {
                "scope": [scope.name, scope.version, scope.schema_url] if scope else None,
                "name": span.name,
                "kind": span.kind.name,
                "parent": bool(span.parent),
                "attributes": {
                    k: _PORT.sub("127.0.0.1:PORT", v) if isinstance(v, str) else v
                    for k, v in (span.attributes or {}).items()
                },
                "status": [span.status.status_code.name, span.status.description],
                "events": [
                    {
                        k: _PORT.sub("127.0.0.1:PORT", str(v))
                        for k, v in (e.attributes or {}).items()
                        if k != "exception.stacktrace"
                    }
                    | {"name": e.name}
                    for e in span.events
                ],
            }
        )
    headers = [
        {"traceparent": len(h.get("traceparent", "")), "tracestate": "tracestate" in h}
        | {k: v for k, v in h.items() if k not in ("traceparent", "host")}
        for h in received
    ]
    kept = [url for _, url in HTTPSpans._described]  # empty under the instrumentation
    print(json.dumps({"spans": spans, "headers": headers, "kept": kept}))


def _run(mode: str) -> dict[str, Any]:
    code = f"from tests.integration.test_http_spans import _probe; _probe({mode!r})"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_outbound_spans_are_the_instrumentations_own() -> None:
    upstream, herald = (_run(mode) for mode in MODES)
    assert herald["headers"] == upstream["headers"]
    for mine, theirs in zip(herald["spans"], upstream["spans"], strict=True):
        assert mine == theirs
    spans = upstream["spans"]
    assert len(spans) == 10  # eight requests (one twice) and the task
    assert {s["name"] for s in spans} >= {"POST", "GET"}
    statuses = [s["status"][0] for s in spans if s["name"] != "task"]
    assert statuses.count("ERROR") == 4  # 404, 503, refused, timed out
    assert not any(word in json.dumps(s) for s in spans for word in ("tok-", "AAsec", "opaque"))
    assert all(h["traceparent"] == 55 for h in upstream["headers"])  # the context went along
    # What HTTPSpans keeps of a URL: never one with a secret in its path or query.
    assert any(url.endswith("/mastodon/api/v1/statuses") for url in herald["kept"])
    assert not any("secret" in url for url in herald["kept"])
