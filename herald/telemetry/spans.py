"""What every span carries, and what no exported span may carry.

- :class:`CorrelatedSampler` stamps the correlation id and workspace of the running work
  (:mod:`herald.telemetry.context`) on every span it lets record, as the span is made:
  Herald's own, Celery's, SQLAlchemy's and httpx's alike, so any span of a flow can be found
  by its correlation id.
- :func:`redact_http_request` is the httpx instrumentation's request hook: the URL attributes
  lose their path secrets (Telegram's ``/bot<token>/``, a Discord webhook's token) and their
  query string (Threads sends ``access_token`` there) before anything else sees the span. A
  request marked :data:`OPAQUE_URL` (the outbound client's: a URL a user or operator gave, whose
  path may be the secret itself, as a Slack incoming webhook's is) keeps its origin only.
- :func:`redact_span` applies :mod:`herald.redaction` to every span on its way out: the
  name, attributes, event attributes (an exception's message and stack trace), link
  attributes and the status description. A span with nothing to redact is passed on as it
  is; only a span that carried a secret is copied. :func:`redacting` puts it in front of
  whatever exporter is configured (file, console, in-memory in tests) as a
  :class:`RedactingSpanExporter`; Herald's OTLP exporter applies the same rules as it
  encodes (:mod:`herald.telemetry.otlp`), with what it found clean kept beside its encoding.

SQLAlchemy's spans carry the statement with its placeholders, never the bound values
(``enable_commenter`` is off); a driver's error text in a status description is redacted
like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceState, get_current_span
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.util.types import Attributes

from herald.redaction import REDACTED, CleanMemo, is_secret_key, redact_text, redact_url
from herald.telemetry import context

CORRELATION_ATTRIBUTE = "herald.correlation_id"
WORKSPACE_ATTRIBUTE = "herald.workspace_id"
_URL_ATTRIBUTES = ("http.url", "url.full")
#: A request extension: the URL is one a user or operator supplied (a webhook, an alert
#: receiver, a media file), opaque to Herald; its span keeps scheme, host and port only.
OPAQUE_URL = "herald.opaque_url"


class CorrelatedSampler(Sampler):
    """``inner``'s decision, with the running work's correlation id and workspace among the
    attributes a recorded span starts with.

    A sampler is the one place the SDK lets attributes join a span as it is made, in the same
    step as the span's own: a span processor's ``on_start`` would set each afterwards, under
    the span's lock, on every span (docs/performance.md, sixteenth round).

    When ``inner`` is a ``ParentBased`` sampler with the SDK's default delegates (a parent's
    decision is followed: the one Herald configures), a span with a valid parent takes the
    parent's decision here, without the three calls the SDK makes to reach it. Herald's tracer
    calls :meth:`sample_under` with the parent it has looked up already."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self._follows_parent = type(inner) is ParentBased and (
            inner._remote_parent_sampled,
            inner._local_parent_sampled,
            inner._remote_parent_not_sampled,
            inner._local_parent_not_sampled,
        ) == (ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_OFF)

    def should_sample(  # noqa: PLR0917 - the SDK's Sampler signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        return self.sample_under(
            parent, parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def sample_under(  # noqa: PLR0917 - the SDK's Sampler signature, and the parent
        self,
        parent: SpanContext | None,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """:meth:`should_sample`, given the parent's span context ``parent_context`` holds
        (Herald's tracer has looked it up already)."""
        followed = None  # the parent whose decision this span takes
        if self._follows_parent and parent is not None and parent.is_valid:
            if not parent.trace_flags.sampled:
                return SamplingResult(Decision.DROP, None, parent.trace_state)
            followed = parent
        correlation_id, workspace_id = context.stamp()
        if correlation_id or workspace_id:
            stamped = dict(attributes) if attributes else {}
            if correlation_id:
                stamped[CORRELATION_ATTRIBUTE] = correlation_id
            if workspace_id:
                stamped[WORKSPACE_ATTRIBUTE] = workspace_id
            attributes = stamped
        if followed is not None:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, followed.trace_state)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"CorrelatedSampler{{{self.inner.get_description()}}}"


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
            clean = origin_of(value) if opaque else url_for_span(value)
            if clean != value:
                span.set_attribute(key, clean)
    path = attributes.get("url.path")
    if isinstance(path, str):
        clean = REDACTED if opaque else redact_text(path)
        if clean != path:
            span.set_attribute("url.path", clean)
    if attributes.get("url.query"):
        span.set_attribute("url.query", REDACTED)


# URLs :func:`redact_url` left as they were (no query, no secret in the path: a provider's
# endpoint), remembered so a request to the same one is not parsed again. At most 1,024 URLs
# of at most 2,048 characters.
_CLEAN_URLS = CleanMemo(1024, 2048, 1024 * 2048)


def url_for_span(url: str) -> str:
    """``url`` as a span may carry it (:func:`herald.redaction.redact_url`), remembered when
    that is ``url`` itself."""
    if url in _CLEAN_URLS:
        return url
    clean = redact_url(url)
    if clean == url:
        _CLEAN_URLS.remember(url, len(url))
    return clean


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


def redacted_attribute(key: str, value: Any) -> Any:
    """An attribute's value as an exported span may carry it (``value`` itself when clean)."""
    if is_secret_key(key.rsplit(".", 1)[-1]):  # http.request.header.authorization
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, tuple | list):
        clean = tuple(redact_text(v) if isinstance(v, str) else v for v in value)
        return value if clean == tuple(value) else clean
    return value


# String attributes found to hold no secret under their key (a statement text under
# ``db.statement``, a span's correlation id): the pairs every span repeats are checked once per
# process. At most 4,096 pairs of at most 16,384 characters each and 1 M characters in all.
_CLEAN_PAIRS = CleanMemo(4096, 16_384, 1_000_000)


def _redacted(attributes: Attributes) -> dict[str, Any] | None:
    """A redacted copy of ``attributes``, or None when nothing in them had to change."""
    if not attributes:
        return None
    copy: dict[str, Any] | None = None
    for key, value in attributes.items():
        pair: tuple[str, str] | None = (key, value) if type(value) is str else None
        if pair is not None and pair in _CLEAN_PAIRS:
            continue
        clean = redacted_attribute(key, value)
        if clean != value:
            if copy is None:
                copy = dict(attributes)
            copy[key] = clean
        elif pair is not None:
            _CLEAN_PAIRS.remember(pair, len(key) + len(pair[1]))
    return copy


def _counted(attributes: Mapping[str, Any] | None, dropped: int) -> Any:
    """``attributes`` as a copy may carry them and still say that ``dropped`` were dropped
    (the SDK reads that count off a ``BoundedAttributes``)."""
    if not dropped:
        return attributes
    kept = BoundedAttributes(attributes=attributes, immutable=True)
    kept.dropped = dropped
    return kept


def _listed(items: list[Any], dropped: int) -> Any:
    """``items`` as a copy's events or links, still saying that ``dropped`` were dropped."""
    if not dropped:
        return items
    kept = BoundedList.from_seq(None, items)
    kept.dropped = dropped
    return kept


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with every secret removed: the same object when it carried none. A copy keeps
    the span's counts of dropped attributes, events and links."""
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
            Event(
                event.name,
                _counted(event_attributes, event.dropped_attributes),
                event.timestamp,
            )
            if event_attributes is not None
            else event
        )
    links: list[Link] = []
    for link in span.links:
        link_attributes = _redacted(link.attributes)
        changed |= link_attributes is not None
        links.append(
            Link(link.context, _counted(link_attributes, link.dropped_attributes))
            if link_attributes is not None
            else link
        )
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
        attributes=_counted(
            attributes if attributes is not None else span.attributes, span.dropped_attributes
        ),
        events=_listed(events, span.dropped_events),
        links=_listed(links, span.dropped_links),
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def redacting(exporter: SpanExporter) -> SpanExporter:
    """``exporter``, sending only what :func:`redact_span` leaves of each span: as it is when
    it redacts as it encodes (``redacts_spans``: Herald's OTLP exporter), else wrapped in a
    :class:`RedactingSpanExporter`."""
    if getattr(exporter, "redacts_spans", False) is True:
        return exporter
    return RedactingSpanExporter(exporter)


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
