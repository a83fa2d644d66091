"""Spans to OTLP/protobuf bytes at a fraction of the SDK encoder's cost, and the exporter that
sends them.

The SDK's encoder (``opentelemetry.exporter.otlp.proto.common``) builds a protobuf message
object for every span, every attribute and every attribute's value, then serialises the tree:
about 40 µs per span of the publish path on this project's machines, a fifth of what telemetry
costs a publish (docs/performance.md). :func:`encode_spans` writes the same request's wire
format directly: a span's own fields by hand (its ids, times and flags each packed by one
``struct`` call, its name, kind and status from tables), and each attribute from a table of
encoded ``KeyValue`` bytes, so the attributes every span of a kind repeats (the statement, the
database, the task name, the host) are encoded once per process. A ``ReadableSpan`` as the SDK
makes it is read from its fields; any other class through its properties, as the SDK's encoder
reads it. About 38 K instructions per span of the publish path, 86 K before the tables and
packing (docs/performance.md, eighteenth round).

The output parses to the message the SDK's encoder builds, field for field (resources and
scopes grouped in the order their first span came; value types as the SDK maps them; an
attribute the SDK cannot encode — an integer outside int64, a string with a lone surrogate —
is left out, as the SDK leaves it out): tests/unit/telemetry/test_otlp.py compares the two on
every kind of span and value. One difference: a span name or status text with a lone surrogate,
which fails the SDK's whole batch, is sent with that character replaced.

:class:`OtlpSpanExporter` is the SDK's OTLP/HTTP exporter (transport, retries, timeouts,
compression, headers, the ``OTEL_EXPORTER_OTLP_*`` variables) with this encoder.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from herald.redaction import CleanMemo, redact_text
from herald.telemetry.spans import redact_span, redacted_attribute
from herald.telemetry.tracer import SpanAttributes

_logger = logging.getLogger(__name__)

#: Encoded ``KeyValue`` fields kept per kind of attribute (a table is emptied when full), of
#: strings of at most KEPT_VALUE_CHARS characters, at most KEPT_CHARS characters in all.
KEPT_ATTRIBUTES = 4096
KEPT_VALUE_CHARS = 16_384
KEPT_CHARS = 1_000_000

_INT64 = range(-(2**63), 2**63)
_UINT64_MASK = (1 << 64) - 1
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack

# SpanFlags: the context says whether its parent is remote, and if so that it is.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


# -- values and attributes (common.proto) -------------------------------------------------------

_ANY_STRING = _tag(1, _LEN)
_ANY_BOOL = _tag(2, _VARINT)
_ANY_INT = _tag(3, _VARINT)
_ANY_DOUBLE = _tag(4, _FIXED64)
_ANY_ARRAY = _tag(5, _LEN)
_ANY_KVLIST = _tag(6, _LEN)
_ANY_BYTES = _tag(7, _LEN)
_LIST_VALUES = _tag(1, _LEN)  # ArrayValue.values and KeyValueList.values
_KV_KEY = _tag(1, _LEN)
_KV_VALUE = _tag(2, _LEN)


def _int(value: int) -> bytes:
    if value not in _INT64:
        raise ValueError(f"{value} is outside int64")
    return _ANY_INT + _varint(value & _UINT64_MASK)


def _array(value: Sequence[Any]) -> bytes:
    items = b"".join(_length_delimited(_LIST_VALUES, _any_value(v)) for v in value)
    return _length_delimited(_ANY_ARRAY, items)


def _kvlist(value: Mapping[Any, Any]) -> bytes:
    pairs = b"".join(
        _length_delimited(_LIST_VALUES, _key_value(str(k), v)) for k, v in value.items()
    )
    return _length_delimited(_ANY_KVLIST, pairs)


_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda _: b"",
    bool: lambda value: _ANY_BOOL + (b"\x01" if value else b"\x00"),
    str: lambda value: _length_delimited(_ANY_STRING, value.encode("utf-8")),
    int: _int,
    float: lambda value: _ANY_DOUBLE + _pack_double(value),
    bytes: lambda value: _length_delimited(_ANY_BYTES, value),
}


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``'s bytes, types mapped as the SDK maps them (ValueError if it cannot)."""
    encode = _SCALARS.get(type(value))
    return encode(value) if encode is not None else _encoder_of(value)(value)


def _encoder_of(value: Any) -> Callable[[Any], bytes]:
    """For a subclass or a container: the SDK encoder's checks, in its order."""
    for kind in (bool, str, int, float, bytes):
        if isinstance(value, kind):
            return _SCALARS[kind]
    if isinstance(value, Sequence):
        return _array
    if isinstance(value, Mapping):
        return _kvlist
    # The type only: the value may be anything, a secret too, and this text is logged.
    raise ValueError(f"invalid type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    head = _length_delimited(_KV_KEY, key.encode("utf-8")) if key else b""
    return head + _length_delimited(_KV_VALUE, _any_value(value))


# Attribute maps read straight from their dict; value types kept in the table beside str.
_BOUNDED = frozenset((BoundedAttributes, SpanAttributes))
_KEYED = frozenset((int, bool))


class _Attributes:
    """Encodes attribute mappings as a repeated ``KeyValue`` field (one object per field tag);
    string, integer and boolean attributes from a table of their encoded fields."""

    def __init__(self, tag: bytes, redact: bool = False) -> None:
        self.tag = tag
        self.redact = redact  # each value as redact_span leaves it; only a clean one is kept
        # str values by the (key, value) item; int and bool with their type (True == 1)
        self._kept = CleanMemo(KEPT_ATTRIBUTES, KEPT_VALUE_CHARS, KEPT_CHARS)
        self._typed = CleanMemo(KEPT_ATTRIBUTES, 0, 0)

    def field(self, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        if type(attributes) in _BOUNDED:  # its dict, not the Mapping mix-ins' lookups
            attributes = attributes._dict  # type: ignore[attr-defined]
        kept = self._kept
        try:
            return b"".join([kept.get(item) or self._encode(item) for item in attributes.items()])
        except TypeError:  # an unhashable value (a list, in a span built by hand): not kept
            return b"".join([self._encode(item) for item in attributes.items()])

    def _encode(self, item: tuple[str, Any]) -> bytes:
        """One attribute's field (empty when the SDK would leave it out), kept when its value
        is a string, an integer or a boolean."""
        key, value = item
        kind = type(value)
        table: CleanMemo | None = None
        index: tuple[Any, ...] | None = None
        if kind is str:  # (field() looked it up already)
            table, index = self._kept, item
        elif kind in _KEYED:
            table, index = self._typed, (key, value, kind)
            encoded = table.get(index)
            if encoded is not None:
                return encoded  # type: ignore[no-any-return]
        try:
            if self.redact:
                clean = redacted_attribute(key, value)
                if clean is not value and clean != value:  # a secret: its remains, never kept
                    value, index = clean, None
            encoded = _length_delimited(self.tag, _key_value(key, value))
        except Exception as error:  # as the SDK's encoder: this attribute is left out
            _logger.warning("span attribute %r not exported: %s", key, error)
            return b""
        if table is not None and index is not None:  # a long text is encoded, not kept
            table.remember(index, len(key) + len(value) if kind is str else 0, encoded)
        return encoded


# -- spans (trace.proto) ------------------------------------------------------------------------

_SPAN_TRACE_ID = _tag(1, _LEN) + b"\x10"  # always 16 bytes
_SPAN_SPAN_ID = _tag(2, _LEN) + b"\x08"  # always 8 bytes
_SPAN_TRACE_STATE = _tag(3, _LEN)
_SPAN_PARENT_ID = _tag(4, _LEN) + b"\x08"
_SPAN_NAME = _tag(5, _LEN)
_SPAN_KIND = _tag(6, _VARINT)
_SPAN_START = _tag(7, _FIXED64)
_SPAN_END = _tag(8, _FIXED64)
_SPAN_ATTRIBUTE = _tag(9, _LEN)
_SPAN_DROPPED_ATTRIBUTES = _tag(10, _VARINT)
_SPAN_EVENT = _tag(11, _LEN)
_SPAN_DROPPED_EVENTS = _tag(12, _VARINT)
_SPAN_LINK = _tag(13, _LEN)
_SPAN_DROPPED_LINKS = _tag(14, _VARINT)
_SPAN_STATUS = _tag(15, _LEN)
_SPAN_FLAGS = _tag(16, _FIXED32)
_EVENT_TIME = _tag(1, _FIXED64)
_EVENT_NAME = _tag(2, _LEN)
_EVENT_ATTRIBUTE = _tag(3, _LEN)
_EVENT_DROPPED = _tag(4, _VARINT)
_LINK_TRACE_ID = _tag(1, _LEN) + b"\x10"
_LINK_SPAN_ID = _tag(2, _LEN) + b"\x08"
_LINK_ATTRIBUTE = _tag(4, _LEN)
_LINK_DROPPED = _tag(5, _VARINT)
_LINK_FLAGS = _tag(6, _FIXED32)
_STATUS_MESSAGE = _tag(2, _LEN)
_STATUS_CODE = _tag(3, _VARINT)
_SCOPE_NAME = _tag(1, _LEN)
_SCOPE_VERSION = _tag(2, _LEN)
_SCOPE_ATTRIBUTE = _tag(3, _LEN)
_SCOPE_SPANS_SCOPE = _tag(1, _LEN)
_SCOPE_SPANS_SPAN = _tag(2, _LEN)
_SCHEMA_URL = _tag(3, _LEN)  # ScopeSpans.schema_url and ResourceSpans.schema_url
_RESOURCE_ATTRIBUTE = _tag(1, _LEN)
_RESOURCE_SPANS_RESOURCE = _tag(1, _LEN)
_RESOURCE_SPANS_SCOPE_SPANS = _tag(2, _LEN)
_REQUEST_RESOURCE_SPANS = _tag(1, _LEN)

# A span's most frequent fields, each written by one call: the trace and span ids (big-endian,
# as the ids' bytes are), the parent's id, start and end times (little-endian fixed64).
_M64 = (1 << 64) - 1
_pack_ids = struct.Struct(">2sQQ2sQ").pack
_pack_parent = struct.Struct(">2sQ").pack
_pack_times = struct.Struct("<1sQ1sQ").pack
# By the enum's value; proto's kinds start at 1. A status without a description by its code.
_KIND_FIELDS = tuple(
    _SPAN_KIND + _varint(kind.value + 1) for kind in sorted(SpanKind, key=lambda k: k.value)
)
_STATUS_FIELDS = tuple(
    _length_delimited(_SPAN_STATUS, _STATUS_CODE + _varint(code.value) if code.value else b"")
    for code in sorted(StatusCode, key=lambda c: c.value)
)
#: Span names whose encoded field is kept (the table is emptied when full).
KEPT_NAMES = 1024


def _string(tag: bytes, value: str | None) -> bytes:
    # A name or status text that is not valid Unicode (a lone surrogate: JSON's "\ud800" in a
    # message a producer sent) would fail the SDK's whole batch; here it loses that character.
    return _length_delimited(tag, value.encode("utf-8", "replace")) if value else b""


def _count(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


def _pack_flags(remote: bool) -> bytes:
    return _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE if remote else _HAS_IS_REMOTE)


_FLAGS_LOCAL = _SPAN_FLAGS + _pack_flags(False)
_FLAGS_REMOTE = _SPAN_FLAGS + _pack_flags(True)


def _flags(context: SpanContext | None) -> bytes:
    return _pack_flags(context is not None and context.is_remote)


def _dropped(items: Any, kind: type) -> int:
    """What a ``ReadableSpan``'s ``dropped_*`` property says of its ``items``."""
    return items.dropped if isinstance(items, kind) else 0  # type: ignore[attr-defined]


# (name, context, parent, kind, start, end, attributes, dropped attributes, events, dropped
# events, links, dropped links, status): what a span's encoding reads.
_Fields = tuple[Any, ...]


def _fields(span: ReadableSpan) -> _Fields:
    """A span's fields: a ``ReadableSpan`` as the SDK makes them, straight from its slots;
    anything else (a subclass may read them otherwise) through its properties, as the SDK's
    encoder reads them."""
    if type(span) is ReadableSpan:
        attributes, events, links = span._attributes, span._events, span._links
        return (
            span._name,
            span._context,
            span._parent,
            span._kind,
            span._start_time,
            span._end_time,
            attributes,
            attributes.dropped  # type: ignore[union-attr]
            if type(attributes) in _BOUNDED
            else _dropped(attributes, BoundedAttributes),
            events,
            0 if type(events) is tuple else _dropped(events, BoundedList),
            links,
            0 if type(links) is tuple else _dropped(links, BoundedList),
            span._status,
        )
    return (
        span.name,
        span.context,
        span.parent,
        span.kind,
        span.start_time,
        span.end_time,
        span.attributes,
        span.dropped_attributes,
        span.events,
        span.dropped_events,
        span.links,
        span.dropped_links,
        span.status,
    )


class SpanEncoder:
    """Encodes batches of spans as an ``ExportTraceServiceRequest`` (one per process: it keeps
    the encoded resources, scopes, span names and attributes it has seen).

    With ``redact``, each span is encoded as :func:`~herald.telemetry.spans.redact_span`
    leaves it (its name, attributes, event and link attributes, status text), in the same
    step: what was found clean is kept encoded, so a value every span repeats is checked once;
    a value that held a secret is encoded without it and not kept."""

    def __init__(self, redact: bool = False) -> None:
        self.redact = redact
        self._span_attributes = _Attributes(_SPAN_ATTRIBUTE, redact)
        self._event_attributes = _Attributes(_EVENT_ATTRIBUTE, redact)
        self._link_attributes = _Attributes(_LINK_ATTRIBUTE, redact)
        self._other_attributes = {
            tag: _Attributes(tag) for tag in (_RESOURCE_ATTRIBUTE, _SCOPE_ATTRIBUTE)
        }
        self._names = CleanMemo(KEPT_NAMES, KEPT_VALUE_CHARS, KEPT_CHARS)
        self._resources: dict[Resource, bytes] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # Grouped by resource, then scope, each in the order its first span came, as the SDK's
        # encoder groups them by equality. A Resource hashes by dumping its attributes as JSON:
        # here each distinct (resource, scope) pair of objects is hashed once per batch.
        grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        by_objects: dict[tuple[int, int], list[bytes]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            group = by_objects.get((id(resource), id(scope)))
            if group is None:
                group = grouped.setdefault(resource, {}).setdefault(scope or None, [])
                by_objects[id(resource), id(scope)] = group
            group.append(self._span(_fields(span)))
        request = []
        for resource, by_scope in grouped.items():
            scope_spans = b"".join(
                _length_delimited(_RESOURCE_SPANS_SCOPE_SPANS, self._scope_spans(scope, encoded))
                for scope, encoded in by_scope.items()
            )
            resource_spans = (
                _length_delimited(_RESOURCE_SPANS_RESOURCE, self._resource(resource))
                + scope_spans
                + _string(_SCHEMA_URL, resource.schema_url)
            )
            request.append(_length_delimited(_REQUEST_RESOURCE_SPANS, resource_spans))
        return b"".join(request)

    def _resource(self, resource: Resource) -> bytes:
        encoded = self._resources.get(resource)
        if encoded is None:
            encoded = self._other_attributes[_RESOURCE_ATTRIBUTE].field(resource.attributes)
            self._resources[resource] = encoded
        return encoded

    def _scope_spans(self, scope: InstrumentationScope | None, spans: list[bytes]) -> bytes:
        head = self._scopes.get(scope)
        if head is None:
            encoded = b""
            if scope is not None:
                encoded = (
                    _string(_SCOPE_NAME, scope.name)
                    + _string(_SCOPE_VERSION, scope.version)
                    + self._other_attributes[_SCOPE_ATTRIBUTE].field(scope.attributes)
                )
            head = _length_delimited(_SCOPE_SPANS_SCOPE, encoded)
            self._scopes[scope] = head
        schema_url = _string(_SCHEMA_URL, scope.schema_url) if scope is not None else b""
        return head + b"".join(spans) + schema_url

    def _name(self, name: str) -> bytes:
        encoded: bytes | None = self._names.get(name)
        if encoded is None:
            if self.redact:
                clean = redact_text(name)
                if clean != name:  # a secret in the name: its remains, never kept
                    return _string(_SPAN_NAME, clean)
            encoded = _string(_SPAN_NAME, name)
            self._names.remember(name, len(name), encoded)
        return encoded

    def _status(self, status: Status | None) -> bytes:
        """A span's status field (none for None, as the SDK's encoder sends none)."""
        if status is None:
            return b""
        description = status.description
        if not description:
            return _STATUS_FIELDS[status.status_code._value_]
        if self.redact:
            description = redact_text(description)
        return _length_delimited(
            _SPAN_STATUS,
            _string(_STATUS_MESSAGE, description) + _count(_STATUS_CODE, status.status_code.value),
        )

    def _span(self, fields: _Fields) -> bytes:
        """One span as a ``ScopeSpans.spans`` field."""
        (
            name,
            context,
            parent,
            kind,
            start,
            end,
            attributes,
            dropped_attributes,
            events,
            dropped_events,
            links,
            dropped_links,
            status,
        ) = fields
        trace_id, span_id, _, _, trace_state, _ = context  # a SpanContext is a tuple
        parts = [_pack_ids(_SPAN_TRACE_ID, trace_id >> 64, trace_id & _M64, _SPAN_SPAN_ID, span_id)]
        if trace_state:
            state = ",".join(f"{key}={value}" for key, value in trace_state.items())
            parts.append(_string(_SPAN_TRACE_STATE, state))
        if parent is not None:
            parts.append(_pack_parent(_SPAN_PARENT_ID, parent[1]))
        parts.append(
            self._name(name)
            if type(name) is str
            else _string(_SPAN_NAME, redact_text(name) if self.redact and name else name)
        )
        parts.append(_KIND_FIELDS[kind._value_])
        if start and end:
            parts.append(_pack_times(_SPAN_START, start, _SPAN_END, end))
        else:
            parts.append(_SPAN_START + _pack_fixed64(start) if start else b"")
            parts.append(_SPAN_END + _pack_fixed64(end) if end else b"")
        parts.append(self._span_attributes.field(attributes))
        if dropped_attributes:
            parts.append(_SPAN_DROPPED_ATTRIBUTES + _varint(dropped_attributes))
        for event in events:
            encoded = (
                (_EVENT_TIME + _pack_fixed64(event.timestamp) if event.timestamp else b"")
                + _string(_EVENT_NAME, event.name)
                + self._event_attributes.field(event.attributes)
                + _count(_EVENT_DROPPED, event.dropped_attributes)
            )
            parts.append(_length_delimited(_SPAN_EVENT, encoded))
        if dropped_events:
            parts.append(_SPAN_DROPPED_EVENTS + _varint(dropped_events))
        for link in links:
            encoded = (
                _LINK_TRACE_ID
                + link.context.trace_id.to_bytes(16, "big")
                + _LINK_SPAN_ID
                + link.context.span_id.to_bytes(8, "big")
                + self._link_attributes.field(link.attributes)
                + _count(_LINK_DROPPED, link.dropped_attributes)
                + _LINK_FLAGS
                + _flags(link.context)
            )
            parts.append(_length_delimited(_SPAN_LINK, encoded))
        if dropped_links:
            parts.append(_SPAN_DROPPED_LINKS + _varint(dropped_links))
        parts.append(self._status(status))
        parts.append(_FLAGS_REMOTE if parent is not None and parent[2] else _FLAGS_LOCAL)
        body = b"".join(parts)
        return _SCOPE_SPANS_SPAN + _varint(len(body)) + body


class OtlpSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with :class:`SpanEncoder`; with ``redact``,
    it sends only what :func:`~herald.telemetry.spans.redact_span` leaves of each span
    (``redacts_spans``: :func:`~herald.telemetry.spans.redacting` wraps it in nothing more)."""

    def __init__(self, *args: Any, redact: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redacts_spans = redact
        self._encoder = SpanEncoder(redact=redact)
        # What the SDK's own export uses besides its encoder; if a release renamed any of it,
        # the SDK's export runs instead (slower, never wrong).
        self._own_path = all(
            hasattr(self, name) for name in ("_client", "_metrics", "_max_request_size")
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._own_path or self._shutdown:
            return super().export([redact_span(s) for s in spans] if self.redacts_spans else spans)
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # a batch that cannot be encoded is dropped, as the SDK does
                _logger.error("failed to encode a span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(data):
                _logger.warning(
                    "span batch of %d bytes dropped: over the %d bytes a request may hold",
                    len(data),
                    self._max_request_size,
                )
                result.error = ValueError("span batch over max_request_size")
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
