"""Herald's tracer (herald.telemetry.tracer) against the SDK's: the same calls, through each,
give the exporter the same spans, field for field; and CorrelatedSampler's shortcut for a span
with a parent gives the decision ParentBased gives."""

from __future__ import annotations

import copy as copy_module
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from herald.telemetry import context
from herald.telemetry.spans import CorrelatedSampler
from herald.telemetry.tracer import HeraldSpan, HeraldTracerProvider

RESOURCE = Resource.create({"service.name": "herald-test"})
FOLLOWS_PARENT = ParentBased(ALWAYS_ON)
NONE_KEPT = SpanLimits(
    max_span_attributes=0,
    max_span_attribute_length=0,
    max_events=0,
    max_links=0,
    max_event_attributes=0,
    max_link_attributes=0,
)
TIGHT = SpanLimits(
    max_span_attributes=3,
    max_span_attribute_length=5,
    max_events=2,
    max_links=1,
    max_event_attributes=2,
    max_link_attributes=2,
)


class CountingIds(IdGenerator):
    """Ids in a fixed sequence, so both tracers give their spans the same ones."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return 1_000_000 + next(self._next)

    def is_trace_id_random(self) -> bool:  # so the RANDOM_TRACE_ID flag is compared too
        return True


def _provider(kind: type[TracerProvider], limits: SpanLimits | None, sampler: Sampler) -> Any:
    provider = kind(
        resource=RESOURCE,
        sampler=sampler,
        id_generator=CountingIds(),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _fields(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads of a span (an exception event's stack trace names the line it
    was raised on, and times are the clock's: neither is compared)."""

    def attributes(mapping: Any) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in (mapping or {}).items() if k != "exception.stacktrace"]

    return {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "kind": span.kind,
        "attributes": attributes(span.attributes),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, attributes(e.attributes), e.dropped_attributes) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [
            (link.context, attributes(link.attributes), link.dropped_attributes)
            for link in span.links
        ],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "ended": span.end_time is not None and span.start_time is not None,
        "explicit_times": (span.start_time, span.end_time)
        if span.start_time is not None and span.start_time < 10**6
        else None,
    }


def _same_spans(
    scenario: Callable[[trace.Tracer], None],
    limits: SpanLimits | None = None,
    sampler: Sampler = FOLLOWS_PARENT,
) -> list[ReadableSpan]:
    exported = []
    for kind in (TracerProvider, HeraldTracerProvider):
        provider, exporter = _provider(kind, limits, sampler)
        scenario(provider.get_tracer("test", "1.0", attributes={"scope": "a"}))
        exported.append(exporter.get_finished_spans())
    sdk, herald = exported
    assert [_fields(s) for s in herald] == [_fields(s) for s in sdk]
    return list(herald)


class Odd:
    def __str__(self) -> str:
        return "odd"


ODD_VALUES: dict[Any, Any] = {
    "str": "text",
    "int": 7,
    "float": 1.5,
    "bool": True,
    "none": None,
    "bytes": b"\x00\x01",
    "list": ["a", "b"],
    "mixed": [1, "a", None],
    "tuple": (1.0, 2.0),
    "mapping": {"k": "v", "": "dropped", 3: "three"},
    "object": Odd(),
    "": "empty key",
    42: "an int key",
    "long": "x" * 40,
    "big": 2**70,
    "1": "a string key",
    1: "an int key cleaned to the same",
}


def _every_call(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER, attributes={"a": 1}) as outer:
        outer.set_attribute("b", "two")
        outer.set_attributes({"a": 3, "c": [1, 2]})  # "a" again: moved last, as the SDK moves it
        outer.add_event("one", {"k": "v", "n": 1})
        outer.add_event("two")
        outer.add_event("three", {"dropped": "by the tight limits"})
        outer.update_name("outer renamed")
        with tracer.start_as_current_span("child", attributes=ODD_VALUES) as child:
            child.set_status(Status(StatusCode.OK))
            child.set_status(StatusCode.ERROR, "ignored: OK stays")
        span = tracer.start_span(
            "linked",
            links=[
                Link(outer.get_span_context(), {"why": "test"}),
                Link(trace.INVALID_SPAN_CONTEXT),
            ],
            start_time=10,
        )
        span.add_link(outer.get_span_context(), {"second": True})
        span.add_link(trace.INVALID_SPAN_CONTEXT)
        span.set_status(StatusCode.ERROR, "went wrong")
        span.end(end_time=20)
        span.end()  # twice: a warning, no second export
        span.set_attribute("after", "end")  # ignored
        span.add_event("after end")
        span.update_name("after end")
        span.set_status(StatusCode.OK)
        with pytest.raises(ValueError, match="boom"), tracer.start_as_current_span("failing"):
            raise ValueError("boom")
        quiet = tracer.start_span("quiet", record_exception=False, set_status_on_exception=False)
        with pytest.raises(KeyError), quiet:
            raise KeyError("k")
        remote = SpanContext(
            99, 98, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
        )
        tracer.start_span(
            "remote child", context=trace.set_span_in_context(NonRecordingSpan(remote))
        ).end()
        tracer.start_span("new root", context=context_api.Context()).end()


@pytest.mark.parametrize(
    "limits", [None, TIGHT, NONE_KEPT], ids=["default limits", "tight limits", "none kept"]
)
def test_every_call_gives_the_exporter_what_the_sdk_gives_it(limits: SpanLimits | None) -> None:
    spans = _same_spans(_every_call, limits)
    assert [s.name for s in spans] == [
        "child",
        "linked",
        "failing",
        "quiet",
        "remote child",
        "new root",
        "outer renamed",
    ]
    # What the processors receive is the SDK's own copy, never the live span
    assert all(type(s) is ReadableSpan for s in spans)
    assert spans[-1].to_json()  # the file exporter's rendering works on them


def test_a_parent_not_sampled_makes_no_span_in_either() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        unsampled = SpanContext(5, 6, is_remote=False, trace_flags=TraceFlags(0))
        with trace.use_span(NonRecordingSpan(unsampled)):
            span = tracer.start_span("dropped")
            assert not span.is_recording()
            assert span.get_span_context().trace_id == 5
            span.end()
        tracer.start_span("kept").end()

    assert [s.name for s in _same_spans(scenario)] == ["kept"]


def test_a_span_of_a_disabled_provider_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider, exporter = _provider(HeraldTracerProvider, None, ALWAYS_ON)
    provider.get_tracer("test").start_span("nothing").end()
    assert exporter.get_finished_spans() == ()


plain = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=4),
)
values = st.one_of(
    plain,
    st.lists(plain, max_size=3),
    st.lists(plain, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), plain, max_size=2),
)
keys = st.one_of(st.text(max_size=6), st.integers(min_value=0, max_value=3))


@given(
    st.lists(st.dictionaries(keys, values, max_size=6), min_size=1, max_size=4),
    st.sampled_from([None, TIGHT]),
)
def test_any_attributes_are_kept_converted_or_dropped_as_the_sdk_does(
    batches: list[dict[Any, Any]], limits: SpanLimits | None
) -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("span", attributes=batches[0])
        for batch in batches[1:]:
            span.set_attributes(batch)
            for key, value in batch.items():
                span.set_attribute(key, value)
        span.end()

    _same_spans(scenario, limits)


# -- CorrelatedSampler's shortcut -------------------------------------------------------------


def _parents() -> Iterator[tuple[str, context_api.Context | None]]:
    yield "no context", None
    yield "empty context", context_api.Context()
    for remote, sampled in itertools.product((False, True), repeat=2):
        span_context = SpanContext(
            7,
            8,
            is_remote=remote,
            trace_flags=TraceFlags(1 if sampled else 0),
            trace_state=TraceState([("vendor", "x")]),
        )
        name = f"{'remote' if remote else 'local'} {'sampled' if sampled else 'not sampled'}"
        yield name, trace.set_span_in_context(NonRecordingSpan(span_context))
    yield "invalid parent", trace.set_span_in_context(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT))


@pytest.mark.parametrize(("parent", "parent_context"), list(_parents()))
@pytest.mark.parametrize("ratio", [0.0, 1.0])
@pytest.mark.parametrize("correlated", [False, True], ids=["no correlation", "correlation"])
def test_the_sampler_decides_as_parent_based_decides(
    parent: str, parent_context: context_api.Context | None, ratio: float, correlated: bool
) -> None:
    inner = ParentBased(TraceIdRatioBased(ratio))
    sampler = CorrelatedSampler(inner)
    assert sampler._follows_parent
    stamp = {"herald.correlation_id": "c-1", "herald.workspace_id": "w-1"} if correlated else {}
    with context.acting_for("c-1" if correlated else None, "w-1" if correlated else None):
        mine = sampler.should_sample(parent_context, 2**100, "name", attributes={"a": 1})
    theirs = inner.should_sample(parent_context, 2**100, "name", attributes={"a": 1, **stamp})
    assert mine.decision == theirs.decision, parent
    assert dict(mine.attributes) == dict(theirs.attributes)
    assert mine.trace_state == theirs.trace_state


def test_a_sampler_with_other_delegates_is_asked_itself() -> None:
    inner = ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON)
    sampler = CorrelatedSampler(inner)
    assert not sampler._follows_parent
    unsampled = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(7, 8, is_remote=False, trace_flags=TraceFlags(0)))
    )
    assert sampler.should_sample(unsampled, 7, "name").decision.is_sampled()
    assert not CorrelatedSampler(ALWAYS_OFF)._follows_parent


def test_threads_setting_one_span_at_once_lose_no_count() -> None:
    """Every write goes under the span's lock: what is kept and what is dropped add up."""
    provider, exporter = _provider(HeraldTracerProvider, None, FOLLOWS_PARENT)
    span = provider.get_tracer("test").start_span("shared")
    threads, writes = 8, 400

    def write(n: int) -> None:
        for i in range(writes):
            if i % 2:
                span.set_attribute(f"t{n}-{i}", i)
            else:  # an unusual value: through the SDK's cleaner, under the shared lock
                span.set_attributes({f"t{n}-{i}": [i, i]})

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    span.end()
    (done,) = exporter.get_finished_spans()
    assert len(done.attributes) == 128  # the SDK's default limit
    assert done.dropped_attributes == threads * writes - 128


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_a_value_that_cannot_be_cleaned_stores_nothing_of_its_batch_as_in_the_sdk() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("span", attributes={"kept": 1})
        with pytest.raises(RuntimeError, match="no str"):
            span.set_attributes({"a": 1, "b": "two", "c": Unprintable()})
        span.end()

    (span,) = _same_spans(scenario)
    assert dict(span.attributes) == {"kept": 1}


class RecordOnly(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_ONLY, {"sampler": "record only"}, TraceState([("s", "1")])
        )

    def get_description(self) -> str:
        return "RecordOnly"


def test_a_span_recorded_but_not_sampled_is_made_as_the_sdk_makes_it() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("recorded", attributes={"a": 1})
        assert span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
        span.end()

    _same_spans(scenario, sampler=RecordOnly())


class Renaming(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        span._name = "renamed by a processor"


def test_a_processor_gets_a_copy_and_the_live_span_stays_the_callers() -> None:
    provider, exporter = _provider(HeraldTracerProvider, None, FOLLOWS_PARENT)
    provider.add_span_processor(Renaming())
    span = provider.get_tracer("test").start_span("mine", attributes={"a": 1})
    assert isinstance(span, HeraldSpan)
    assert isinstance(span, Span)
    span.end()
    assert span.name == "mine"
    (exported,) = exporter.get_finished_spans()
    assert type(exported) is ReadableSpan
    assert exported is not span


def test_each_span_writes_under_its_own_lock() -> None:
    """A thread holding one span's lock holds up no other span's write (the SDK cleaner's
    path included), and the attribute map's lock is its span's."""
    provider, _ = _provider(HeraldTracerProvider, None, FOLLOWS_PARENT)
    tracer = provider.get_tracer("test")
    first, second = tracer.start_span("first"), tracer.start_span("second")
    assert first._attributes._lock is first._lock
    assert first._lock is not second._lock
    done = threading.Event()

    def write() -> None:
        second.set_attribute("list", [1, 2])
        second.set_attribute("plain", 1)
        done.set()

    with first._lock:
        writer = threading.Thread(target=write)
        writer.start()
        assert done.wait(5), "a write to another span waited for this span's lock"
    writer.join()


def test_a_copy_of_the_attributes_taken_while_they_are_written_is_whole() -> None:
    """The SDK's readers (a deep copy, iterating a live span) lock what every write locks."""
    provider, _ = _provider(HeraldTracerProvider, None, FOLLOWS_PARENT)
    span = provider.get_tracer("test").start_span("live")
    stop = threading.Event()
    errors: list[BaseException] = []

    def copy() -> None:
        while not stop.is_set():
            try:
                copy_ = copy_module.deepcopy(span._attributes)
                assert len(copy_) <= 128
                list(iter(span._attributes))
            except BaseException as error:
                errors.append(error)
                return

    reader = threading.Thread(target=copy)
    reader.start()
    for i in range(3000):
        span.set_attribute(f"k{i % 200}", i)
    stop.set()
    reader.join()
    span.end()
    assert errors == []
