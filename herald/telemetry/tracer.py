"""The SDK's tracer and span, with the work each span repeats done once.

A span made and ended through the SDK costs about 180 K instructions, more than the client-side
work of the statement it describes (docs/performance.md, sixteenth round), and the publish path
makes four of them per post. Most of that is not the span's own data but what is built around
it: a ``BoundedAttributes`` map with a lock of its own that checks every value through a
recursive cleaner, two empty ``BoundedList`` objects for events and links, and the lock taken
to start the span.

:class:`HeraldTracerProvider` is the SDK's ``TracerProvider`` (processors, sampler, limits,
resource, id generator, tracer configuration, flush and shutdown unchanged) whose tracers make
:class:`HeraldSpan` objects. A ``HeraldSpan`` *is* an SDK span (``isinstance`` holds, every
method not named here is the SDK's own, processors receive the same ``ReadableSpan`` copy at
its end), made more cheaply:

- attributes go into :class:`SpanAttributes`, a ``BoundedAttributes`` whose plain values (a
  string within the length limit, an integer, a float, a boolean, under a non-empty string
  key) are stored as they are, in the SDK's order and under its count limit; a batch with
  anything else in it goes through the SDK's own cleaner whole, so a list, a mapping,
  ``None``, bytes, an odd key or an object is kept, converted, counted or dropped exactly as
  the SDK would, and a value that cannot be cleaned stores nothing of its batch;
- the map's lock is the span's own (reentrant), not one more per span: every write and every
  read the SDK locks is under it;
- events and links get their bounded lists when the first one is added;
- the span is started without its lock (no other thread can hold it yet);
- once ended, the map is read straight from its dict (the exporters' ``items()``).

tests/unit/telemetry/test_tracer.py runs the same calls through the SDK's tracer and this one
and compares what the exporter receives, field for field.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span, Tracer, TracerProvider
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

from herald.telemetry.spans import CorrelatedSampler

_logger = logging.getLogger("opentelemetry.sdk.trace")

_PLAIN = frozenset((str, int, float, bool))
_UNSET = Status(StatusCode.UNSET)
# A span with no event or link yet: its lists are made when the first one is added.
_NONE: tuple[Any, ...] = ()


class SpanAttributes(BoundedAttributes):
    """A span's attributes: the SDK's ``BoundedAttributes``, with plain values stored without
    its cleaner, and its span's lock for its own (reentrant: a write holds it as the span and
    again as the map), so every write and every read the SDK locks is under one lock."""

    def __init__(
        self, maxlen: int | None, max_value_len: int | None, lock: threading.RLock
    ) -> None:
        self._dict: dict[str, types.AnyValue] = {}
        self.maxlen = maxlen
        self.dropped = 0
        self.max_value_len = max_value_len
        self._lock = lock  # type: ignore[assignment]  # the span's, reentrant
        self._immutable = False

    def _set_items(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._immutable:
            self._raise_if_immutable()
        limit = self.max_value_len
        for key, value in attributes.items():
            kind = type(value)
            if (
                kind not in _PLAIN
                or type(key) is not str
                or not key
                or (kind is str and limit is not None and len(value) > limit)  # type: ignore[arg-type]
            ):
                # The SDK's own, for the whole batch: it cleans every item before storing any
                # (a value that fails stores nothing) and counts keys cleaned to the same one.
                BoundedAttributes._set_items(self, attributes)
                return
        if self.maxlen == 0:
            BoundedAttributes._set_items(self, attributes)  # counted as dropped
            return
        for key, value in attributes.items():
            self._store(key, value)

    def __setitem__(self, key: str, value: types.AnyValue) -> None:
        if self._immutable:
            self._raise_if_immutable()
        if self._plain(key, value):
            self._store(key, value)
        else:
            # the SDK's own: a key that is not a string is dropped here
            BoundedAttributes.__setitem__(self, key, value)

    # Read once ended (immutable), as every exporter reads it: straight from the dict, where
    # the Mapping mix-ins would look each key up again through __getitem__.
    def items(self) -> Any:
        return self._dict.items() if self._immutable else super().items()

    def keys(self) -> Any:
        return self._dict.keys() if self._immutable else super().keys()

    def values(self) -> Any:
        return self._dict.values() if self._immutable else super().values()

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def _plain(self, key: Any, value: Any) -> bool:
        """Whether the SDK would store ``value`` under ``key`` as it is."""
        kind = type(value)
        if kind not in _PLAIN or type(key) is not str or not key or self.maxlen == 0:
            return False
        return kind is not str or self.max_value_len is None or len(value) <= self.max_value_len

    def _store(self, key: str, value: types.AnyValue) -> None:
        """Store a plain value as the SDK's ``_setitem_locked`` does (the caller holds the
        lock): a key set again moves last; a new key in a full map evicts the oldest."""
        stored = self._dict
        if key in stored:
            del stored[key]
        elif self.maxlen is not None and len(stored) >= self.maxlen:
            self._setitem_locked(key, value)  # the SDK's eviction, and its warning
            return
        stored[key] = value


class HeraldSpan(Span):
    """An SDK span made without the per-span objects it does not need (module docstring)."""

    def __init__(  # noqa: PLR0917 - built by the tracer alone
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        tracer: Tracer,
        attributes: types.Attributes,
        links: Sequence[trace_api.Link],
        kind: SpanKind,
        record_exception: bool,
        set_status_on_exception: bool,
        record_end_metrics: Any,
    ) -> None:
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope
        self._parent = parent
        self._start_time: int | None = None
        self._end_time: int | None = None
        self._resource = tracer.resource
        self._status = _UNSET
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = tracer.span_processor
        limits = tracer._span_limits
        self._limits = limits
        lock = threading.RLock()
        self._lock = lock  # type: ignore[assignment]  # reentrant: the attribute map's too
        self._attributes = SpanAttributes(
            limits.max_span_attributes, limits.max_span_attribute_length, lock
        )
        if attributes:
            self._attributes._set_items(attributes)
        self._events = _NONE
        self._links = self._new_links(links) if links else _NONE
        self._record_end_metrics = record_end_metrics

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._lock:
            if self._end_time is None:
                self._attributes._set_items(attributes)  # type: ignore[union-attr]
                return
        _logger.warning("Setting attribute on ended span.")

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._lock:
            if self._end_time is None:
                self._attributes[key] = value  # type: ignore[index]
                return
        _logger.warning("Setting attribute on ended span.")

    def _add_event(self, event: Any) -> None:
        self._append("_events", event, self._limits.max_events, "_add_event")

    def _add_link(self, link: trace_api.Link) -> None:
        self._append("_links", link, self._limits.max_links, "_add_link")

    def _append(self, field: str, item: Any, limit: int | None, caller: str) -> None:
        """Append to the span's events or links, their bounded list made on first use; as the
        SDK's ``_check_span_ended`` does, nothing once ended."""
        with self._lock:
            if self._end_time is None:
                items = getattr(self, field)
                if type(items) is tuple:
                    items = BoundedList(limit)
                    setattr(self, field, items)
                items.append(item)
                return
        _logger.warning("Tried calling %s on an ended span.", caller)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                ended = True
            else:
                ended = False
                self._end_time = end_time if end_time is not None else time_ns()
                self._attributes._immutable = True  # type: ignore[union-attr]
        if ended:
            _logger.warning("Calling end() on an ended span.")
            return
        if self._record_end_metrics:
            self._record_end_metrics()
        processor = self._span_processor
        processor._on_ending(self)
        processor.on_end(self._readable_span())


class HeraldTracer(Tracer):
    """The SDK's tracer, making :class:`HeraldSpan` objects (sampling, ids, trace flags and
    processors' ``on_start`` as the SDK's ``start_span`` does them)."""

    def start_span(  # noqa: PLR0917 - the API's signature
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        links = links or ()
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if not self._tracer_config.is_enabled:
            return NonRecordingSpan(context=parent)  # type: ignore[arg-type]  # as the SDK does
        found = parent
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random_trace_id = self.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        if type(self.sampler) is CorrelatedSampler:  # Herald's: given the parent found above
            result = self.sampler.sample_under(
                found, context, trace_id, name, kind, attributes, links
            )
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        decision = result.decision
        sampled = decision.is_sampled()  # type: ignore[no-untyped-call]
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=result.trace_state,
        )
        record_end_metrics = self._tracer_metrics.start_span(parent, decision)
        if not decision.is_recording():  # type: ignore[no-untyped-call]
            return NonRecordingSpan(context=span_context)
        span = HeraldSpan(
            name,
            span_context,
            parent,
            self,
            result.attributes,
            links,
            kind,
            record_exception,
            set_status_on_exception,
            record_end_metrics,
        )
        # Started without the span's lock: no other thread can reach it yet.
        span._start_time = start_time if start_time is not None else time_ns()
        self.span_processor.on_start(span, parent_context=context)
        return span


class HeraldTracerProvider(TracerProvider):
    """The SDK's ``TracerProvider``, whose tracers are :class:`HeraldTracer` objects."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace_api.Tracer:
        tracer = super().get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if type(tracer) is Tracer:
            # The SDK made and registered it (its configurator reaches it there); only its
            # start_span differs, so the object is kept and its class changed.
            tracer.__class__ = HeraldTracer
        return tracer
