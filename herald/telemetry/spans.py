"""What every span carries, and what no exported span may carry.

- :class:`CorrelationSpanProcessor` stamps the correlation id and workspace of the running work
  (:mod:`herald.telemetry.context`) on every span when it starts: Herald's own, Celery's,
  SQLAlchemy's and httpx's alike, so any span of a flow can be found by its correlation id.
- :func:`redact_http_request` is the httpx instrumentation's request hook: the URL attributes
  lose their path secrets (Telegram's ``/bot<token>/``, a Discord webhook's token) and their
  query string (Threads sends ``access_token`` there) before anything else sees the span. A
  request marked :data:`OPAQUE_URL` (the outbound client's: a URL a user or operator gave, whose
  path may be the secret itself, as a Slack incoming webhook's is) keeps its origin only.
- :class:`RedactingSpanExporter` wraps whatever exporter is configured (OTLP, file, console,
  in-memory in tests) and applies :mod:`herald.redaction` to every span on its way out: the
  name, attributes, event attributes (an exception's message and stack trace), link
  attributes and the status description. A span with nothing to redact is passed on as it
  is; only a span that carried a secret is copied.

SQLAlchemy's spans carry the statement with its placeholders, never the bound values
(``enable_commenter`` is off); a driver's error text in a status description is redacted
like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.util.types import Attributes

from herald.redaction import REDACTED, is_secret_key, redact_text, redact_url
from herald.telemetry import context

CORRELATION_ATTRIBUTE = "herald.correlation_id"
WORKSPACE_ATTRIBUTE = "herald.workspace_id"
_URL_ATTRIBUTES = ("http.url", "url.full")
#: A request extension: the URL is one a user or operator supplied (a webhook, an alert
#: receiver, a media file), opaque to Herald; its span keeps scheme, host and port only.
OPAQUE_URL = "herald.opaque_url"


class CorrelationSpanProcessor(SpanProcessor):
    """Adds the running work's correlation id and workspace to every span as it starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        current = context.current()
        if current.correlation_id:
            span.set_attribute(CORRELATION_ATTRIBUTE, current.correlation_id)
        if current.workspace_id:
            span.set_attribute(WORKSPACE_ATTRIBUTE, current.workspace_id)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def redact_http_request(span: ApiSpan, request: Any) -> None:
    """httpx request hook: the URL attributes without path secrets or query string (without
    any path, for an :data:`OPAQUE_URL` request)."""
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    if not span.is_recording() or not attributes:
        return
    opaque = bool((getattr(request, "extensions", None) or {}).get(OPAQUE_URL))
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, origin_of(value) if opaque else redact_url(value))
    path = attributes.get("url.path")
    if isinstance(path, str):
        span.set_attribute("url.path", REDACTED if opaque else redact_text(path))
    if attributes.get("url.query"):
        span.set_attribute("url.query", REDACTED)


def origin_of(url: str) -> str:
    """``url``'s scheme, host and port, its path (if any) replaced by :data:`REDACTED`."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
    except ValueError:
        return REDACTED
    host = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return f"{origin}/{REDACTED}" if parts.path.strip("/") else f"{origin}/"


def _redacted_value(key: str, value: Any) -> Any:
    if is_secret_key(key.rsplit(".", 1)[-1]):  # http.request.header.authorization
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, tuple | list):
        clean = tuple(redact_text(v) if isinstance(v, str) else v for v in value)
        return value if clean == tuple(value) else clean
    return value


def _redacted(attributes: Attributes) -> dict[str, Any] | None:
    """A redacted copy of ``attributes``, or None when nothing in them had to change."""
    if not attributes:
        return None
    copy: dict[str, Any] | None = None
    for key, value in attributes.items():
        clean = _redacted_value(key, value)
        if clean != value:
            if copy is None:
                copy = dict(attributes)
            copy[key] = clean
    return copy


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with every secret removed: the same object when it carried none."""
    changed = False
    name = redact_text(span.name)
    changed |= name != span.name
    attributes = _redacted(span.attributes)
    changed |= attributes is not None
    events: list[Event] = []
    for event in span.events:
        event_attributes = _redacted(event.attributes)
        changed |= event_attributes is not None
        events.append(
            Event(event.name, event_attributes or event.attributes, event.timestamp)
            if event_attributes is not None
            else event
        )
    links: list[Link] = []
    for link in span.links:
        link_attributes = _redacted(link.attributes)
        changed |= link_attributes is not None
        links.append(Link(link.context, link_attributes) if link_attributes is not None else link)
    status = span.status
    if status.description:
        description = redact_text(status.description)
        if description != status.description:
            changed = True
            status = Status(status.status_code, description)
    if not changed:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes if attributes is not None else span.attributes,
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Exports through ``inner`` what :func:`redact_span` leaves of each span."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([redact_span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
