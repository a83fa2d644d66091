"""Herald's OTLP span encoder (herald/telemetry/otlp.py) writes what the SDK's encoder writes:
every request it encodes parses to the SDK's message for the same spans, on every kind of span,
attribute value, resource and scope; and its exporter delivers to a real OTLP/HTTP receiver."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from herald.telemetry import otlp
from herald.telemetry.otlp import OtlpSpanExporter, SpanEncoder
from herald.telemetry.spans import RedactingSpanExporter, redact_span, redacting
from herald.telemetry.tracer import HeraldTracerProvider


def _same(spans: list[ReadableSpan], encoder: SpanEncoder | None = None) -> None:
    mine = ExportTraceServiceRequest.FromString((encoder or SpanEncoder()).encode(spans))
    theirs = encode_spans(spans)
    # Compared as deterministic bytes of the parsed messages: field for field, NaN included.
    assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def _provider(
    resource: Resource | None = None, kind: type[TracerProvider] = TracerProvider
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = kind(resource=resource or Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider, exported


# The SDK's spans and Herald's (whose ended attributes are a SpanAttributes map).
@pytest.fixture(params=[TracerProvider, HeraldTracerProvider])
def recorded(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, exported = _provider(kind=request.param)
    yield provider, exported
    provider.shutdown()


VALUES = [
    "text",
    "",
    "ünïcødé ✓ 𝄞",
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    127,
    128,
    300,
    1.5,
    -0.0,
    float("inf"),
    float("nan"),
    ("a", "b"),
    (True, False),
    (1, -2, 3),
    (0.5, 2.0),
    (),
]


def test_every_kind_of_span_encodes_as_the_sdk_encodes_it(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    tracer = provider.get_tracer("herald.test", "1.2", schema_url="https://example.org/s")
    other = provider.get_tracer("other", attributes={"scope.kind": "test"})
    bare = provider.get_tracer("")
    remote = SpanContext(
        trace_id=0x1F,
        span_id=0x2E,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        for n, value in enumerate(VALUES):
            root.set_attribute(f"value.{n}", value)
        root.add_event("event", {"e.str": "x", "e.int": 3}, timestamp=123)
        root.add_event("")
        root.set_status(Status(StatusCode.ERROR, "went wrong: ✗"))
        with other.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.OK))
    links = [Link(remote, {"l": "why"}), Link(root.get_span_context())]
    for kind in SpanKind:
        tracer.start_span(f"kind {kind.name}", context=parent, kind=kind, links=links).end()
    bare.start_span("", kind=SpanKind.PRODUCER).end()
    try:
        raise ValueError("recorded")
    except ValueError as error:
        with tracer.start_as_current_span("failed") as failed:
            failed.record_exception(error)

    _same(list(exported.get_finished_spans()))


def test_one_attribute_on_a_resource_a_scope_a_span_an_event_and_a_link_encodes_each_time() -> None:
    pair = {"same.key": "same value"}
    provider, exported = _provider(Resource.create(pair))
    tracer = provider.get_tracer("t", attributes=pair)
    with tracer.start_as_current_span("first", attributes=pair) as first:
        first.add_event("event", pair)
    tracer.start_span("second", attributes=pair, links=[Link(first.get_span_context(), pair)]).end()
    encoder = SpanEncoder()
    for _ in range(2):  # the second time from what the encoder kept
        _same(list(exported.get_finished_spans()), encoder)
    provider.shutdown()


def test_values_the_sdk_cannot_encode_are_left_out_as_it_leaves_them_out(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    with provider.get_tracer("t").start_as_current_span("odd") as span:
        span.set_attribute("too.big", 2**64)
        span.set_attribute("too.small", -(2**63) - 1)
        span.set_attribute("surrogate", "a\ud800b")
        span.set_attribute("kept", "yes")
    _same(list(exported.get_finished_spans()))


def test_a_name_that_is_not_valid_unicode_costs_one_character_not_the_batch(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("run/bad\ud800name") as bad:
        bad.set_status(Status(StatusCode.ERROR, "odd \udfff text"))
    tracer.start_span("good").end()
    spans = list(exported.get_finished_spans())
    with pytest.raises(UnicodeEncodeError):  # what the SDK's encoder does with the batch
        encode_spans(spans).SerializeToString()

    request = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    (scope_spans,) = request.resource_spans[0].scope_spans
    assert [s.name for s in scope_spans.spans] == ["run/bad?name", "good"]
    assert scope_spans.spans[0].status.message == "odd ? text"


def test_resources_and_scopes_are_grouped_as_the_sdk_groups_them() -> None:
    same = {"service.name": "a", "host.name": "h"}
    providers = [
        _provider(Resource.create(same)),
        _provider(Resource.create(same)),  # equal, another object: merged
        _provider(Resource.create({"service.name": "b"}, schema_url="https://example.org/r")),
    ]
    spans: list[ReadableSpan] = []
    for n in range(3):
        for provider, _ in providers:
            provider.get_tracer(f"scope {n % 2}").start_span(f"span {n}").end()
    for _, exported in providers:
        spans += exported.get_finished_spans()
    spans.sort(key=lambda s: s.name)  # interleaved resources
    _same(spans)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(
            st.text(max_size=40),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False),
            st.lists(st.text(max_size=8), max_size=4).map(tuple),
            st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4).map(tuple),
        ),
        max_size=12,
    )
)
def test_any_attributes_encode_as_the_sdk_encodes_them(attributes: dict[str, object]) -> None:
    provider, exported = _provider()
    provider.get_tracer("t").start_span("s", attributes=attributes).end()  # type: ignore[arg-type]
    _same(list(exported.get_finished_spans()))
    provider.shutdown()


def test_kept_attributes_are_bounded_and_stay_right(
    monkeypatch: pytest.MonkeyPatch, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = recorded
    monkeypatch.setattr(otlp, "KEPT_ATTRIBUTES", 4)
    encoder = SpanEncoder()
    for n in range(10):
        provider.get_tracer("t").start_span("s", attributes={"k": f"v{n % 6}", "c": "x"}).end()
        _same(list(exported.get_finished_spans()), encoder)
    assert len(encoder._span_attributes._kept) <= 4


def test_kept_names_are_bounded_and_equal_values_of_other_types_kept_apart(
    monkeypatch: pytest.MonkeyPatch, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = recorded
    monkeypatch.setattr(otlp, "KEPT_NAMES", 3)
    encoder = SpanEncoder()
    values: list[object] = [1, True, 1.0, "1", 0, False, (1,), (True,)]
    for n, value in enumerate(values * 2):  # True == 1 == 1.0: each kept as its own type
        provider.get_tracer("t").start_span(f"s{n % 5}", attributes={"k": value}).end()  # type: ignore[dict-item]
        _same(list(exported.get_finished_spans()), encoder)
    assert len(encoder._names) <= 3


def _by_hand(
    recorded: tuple[TracerProvider, InMemorySpanExporter], attributes: Any
) -> tuple[ReadableSpan, ReadableSpan]:
    """A span recorded by the provider, and one built by hand in its trace with
    ``attributes`` as they are (not cleaned by the SDK)."""
    provider, exported = recorded
    provider.get_tracer("t").start_span("original").end()
    (span,) = exported.get_finished_spans()
    built = ReadableSpan(
        name="by hand",
        context=span.context,
        resource=span.resource,
        attributes=attributes,
        instrumentation_scope=span.instrumentation_scope,
    )
    return span, built


def test_a_span_built_by_hand_with_a_list_value_encodes_as_the_sdk_encodes_it(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    span, by_hand = _by_hand(recorded, {"before": "x", "list": [1, 2], "after": 3})
    encoder = SpanEncoder()
    for _ in range(2):
        _same([by_hand, span], encoder)


def test_an_attribute_the_sdk_skips_costs_that_attribute_not_the_batch(
    recorded: tuple[TracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"Bearer {TOKEN}"
    odd = {"kept": "x", 7: "y", "odd type": frozenset([secret]), "after": 1}
    span, by_hand = _by_hand(recorded, odd)
    unset = ReadableSpan(
        name="no status",
        context=span.context,
        resource=span.resource,
        instrumentation_scope=span.instrumentation_scope,
    )
    unset._status = None  # type: ignore[assignment]  # a span built by hand may say so
    for redact in (False, True):
        request = ExportTraceServiceRequest.FromString(
            SpanEncoder(redact=redact).encode([span, by_hand, unset])
        )
        spans = request.resource_spans[0].scope_spans[0].spans
        assert [s.name for s in spans] == ["original", "by hand", "no status"]
        assert [a.key for a in spans[1].attributes] == ["kept", "after"]
        assert not spans[2].HasField("status")
    assert "Zq9Sx1" not in caplog.text  # the skipped value is not logged (the SDK logs it)
    _same([span, by_hand, unset])


class _Attributes(BoundedAttributes):
    """Another attribute map of the SDK's kind."""


def test_the_dropped_count_of_any_bounded_attribute_map_is_encoded(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    attributes = _Attributes(maxlen=1, attributes={"kept": "x", "dropped": "y"})
    assert attributes.dropped == 1
    _same(list(_by_hand(recorded, attributes)))


class _Renamed(ReadableSpan):
    """A span whose properties say something else than its fields (the SDK's encoder reads
    the properties)."""

    @property
    def name(self) -> str:
        return "renamed"

    @property
    def attributes(self) -> dict[str, object]:  # type: ignore[override]
        return {"from": "property"}

    @property
    def dropped_attributes(self) -> int:
        return 3


def test_a_span_of_another_class_is_read_through_its_properties(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    provider.get_tracer("t").start_span("original", attributes={"from": "field"}).end()
    (span,) = exported.get_finished_spans()
    renamed = _Renamed(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        kind=span.kind,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
    _same([span, renamed])
    request = ExportTraceServiceRequest.FromString(SpanEncoder().encode([renamed]))
    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert (encoded.name, encoded.dropped_attributes_count) == ("renamed", 3)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


def test_the_exporter_delivers_its_encoding_over_otlp_http(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    for n in range(5):
        provider.get_tracer("t").start_span(f"span {n}", attributes={"n": n}).end()
    spans = list(exported.get_finished_spans())
    _Receiver.bodies.clear()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exporter = OtlpSpanExporter(endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces")
        assert exporter._own_path
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        server.shutdown()
    (body,) = _Receiver.bodies
    assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)


# -- redacting as it encodes ----------------------------------------------------------------------

TOKEN = "tg-at-Zq9Sx1secretvalue"
SECRET_KEYS = ["note", "http.url", "password", "http.request.header.authorization", "db.statement"]
SECRET_TEXTS = [
    "plain words",
    f"Bearer {TOKEN}",
    f"https://api.telegram.org/bot{TOKEN}/sendMessage",
    f"fields=id&access_token={TOKEN}",
    "SELECT 1 WHERE token_version = %(v)s",
]
SECRET_VALUES = st.one_of(
    st.sampled_from(SECRET_TEXTS),
    st.integers(min_value=-5, max_value=5),
    st.booleans(),
    st.lists(st.sampled_from(SECRET_TEXTS), max_size=2).map(tuple),
)


def _redacted_same(spans: list[ReadableSpan], encoder: SpanEncoder) -> bytes:
    """``encoder`` (redacting) writes what the SDK writes for what redact_span leaves."""
    body = encoder.encode(spans)
    mine = ExportTraceServiceRequest.FromString(body)
    theirs = encode_spans([redact_span(span) for span in spans])
    assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    return body


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET /x", f"GET /bot{TOKEN}/getMe", "SELECT"]),
            st.dictionaries(st.sampled_from(SECRET_KEYS), SECRET_VALUES, max_size=5),
            st.dictionaries(st.sampled_from(SECRET_KEYS), SECRET_VALUES, max_size=2),
            st.sampled_from([None, "went wrong", f'{{"access_token": "{TOKEN}"}}']),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_redacting_encoder_writes_what_redact_span_leaves_and_keeps_no_secret(
    shapes: list[tuple[str, dict[str, object], dict[str, object], str | None]],
) -> None:
    # Tight limits: a span that drops some of what it was given says so after redaction too.
    exported = InMemorySpanExporter()
    provider = HeraldTracerProvider(
        span_limits=SpanLimits(max_span_attributes=3, max_events=1, max_event_attributes=1)
    )
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("t")
    for name, attributes, event, description in shapes:
        with tracer.start_as_current_span(name, attributes=attributes) as span:  # type: ignore[arg-type]
            span.add_event("event", event)  # type: ignore[arg-type]
            span.add_event("second", event)  # type: ignore[arg-type]
            if description is not None:
                span.set_status(Status(StatusCode.ERROR, description))
    spans = list(exported.get_finished_spans())
    provider.shutdown()
    encoder = SpanEncoder(redact=True)
    for _ in range(2):  # the second time from what the encoder kept
        body = _redacted_same(spans, encoder)
        assert TOKEN.encode() not in body
    tables = (encoder._span_attributes, encoder._event_attributes, encoder._link_attributes)
    kept = [*encoder._names, *(list(t._kept) + list(t._typed) for t in tables)]
    assert TOKEN not in repr(kept)
    assert not any(  # an int or a bool under a secret key is not kept either
        key in {"password", "http.request.header.authorization"}
        for t in tables
        for key, *_ in t._typed
    )


def test_long_values_are_encoded_without_being_kept(
    monkeypatch: pytest.MonkeyPatch, recorded: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = recorded
    monkeypatch.setattr(otlp, "KEPT_CHARS", 100)
    encoder = SpanEncoder()
    texts = ["x" * (otlp.KEPT_VALUE_CHARS + 1), *(f"{n:02d}" * 20 for n in range(10))]
    for text in texts:
        provider.get_tracer("t").start_span("s", attributes={"k": text}).end()
        _same(list(exported.get_finished_spans()), encoder)
        assert encoder._span_attributes._kept.chars <= 100
    assert all(len(value) <= 100 for _, value in encoder._span_attributes._kept)


def test_the_otlp_exporter_redacts_on_its_own_path_and_on_the_sdks(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exported = recorded
    with provider.get_tracer("t").start_as_current_span(f"GET /bot{TOKEN}/getMe") as span:
        span.set_attribute("http.url", f"https://api.telegram.org/bot{TOKEN}/sendMessage")
        span.set_attribute("note", f"Bearer {TOKEN}")
    spans = list(exported.get_finished_spans())
    _Receiver.bodies.clear()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exporter = OtlpSpanExporter(
            endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces", redact=True
        )
        assert redacting(exporter) is exporter
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter._own_path = False  # the SDK's export, as when a release renamed its parts
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        server.shutdown()
    assert len(_Receiver.bodies) == 2
    for body in _Receiver.bodies:
        assert TOKEN.encode() not in body
        assert ExportTraceServiceRequest.FromString(body) == encode_spans(
            [redact_span(span) for span in spans]
        )
    plain = OtlpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert isinstance(redacting(plain), RedactingSpanExporter)
