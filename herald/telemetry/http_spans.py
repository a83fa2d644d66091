"""A span for every outbound HTTP request, at the cost of a span.

The httpx instrumentation's request wrapper parses each request's URL twice more (httpx parsed
it once already), works out the span's attributes from it, normalises every request and answer
header into a dict of lists to look for headers to capture (Herald captures none), and builds
the duration histogram's attributes to record them on a meter Herald gives it as a no-op: about
ten times the cost of the span itself (docs/performance.md).

:class:`HTTPSpans` is the instrumentation with one change to its synchronous wrapper: the span's
name and request attributes are worked out by the instrumentation's own function the first
time a method and URL are seen, kept, and given to the span at its start every later time;
header normalisation and histogram work are skipped when nothing would come of them (no
header is captured, the histograms are no-ops). Everything else is the instrumentation's code in
its order: the request hook (Herald's URL redaction), the trace context injected into the
request's headers, the answer's status and attributes, the response hook, an exception
recorded and re-raised. Any configuration this path does not cover (headers to capture, real
histograms) takes the instrumentation's own wrapper. tests/integration/test_http_spans.py
compares the spans and the headers sent with the instrumentation's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from opentelemetry.instrumentation._semconv import _report_new
from opentelemetry.instrumentation.httpx import (
    HTTPXClientInstrumentor,
    RequestInfo,
    ResponseInfo,
    _apply_request_client_attributes_to_span,
    _apply_response_client_attributes_to_span,
    _get_default_span_name,
)
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.metrics import NoOpHistogram
from opentelemetry.propagate import inject
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind, Status

from herald.telemetry.spans import OPAQUE_URL, url_for_span

#: Method and URL pairs whose span description is kept (the table is emptied when full).
KEPT_REQUESTS = 1024

_Description = tuple[str, dict[str, Any], bool]  # name, request attributes, URL excluded


class HTTPSpans(HTTPXClientInstrumentor):
    """The httpx instrumentation, describing each method and URL once (module docstring)."""

    _instance = None  # BaseInstrumentor keeps one instance per class: not the parent's
    _described: ClassVar[dict[tuple[str, str], _Description]] = {}

    def _instrument(self, **kwargs: Any) -> None:
        # A description holds what this configuration decides (excluded URLs, conventions).
        HTTPSpans._described.clear()
        super()._instrument(**kwargs)

    @staticmethod
    def _handle_request_wrapper(
        wrapped: Any,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        **options: Any,  # the instrumentation's keyword arguments, as its _instrument binds them
    ) -> Any:
        module = options["module"]
        request = args[0] if args else None
        if (
            options.get("captured_request_headers")
            or options.get("captured_response_headers")
            or not isinstance(options["duration_histogram_old"], NoOpHistogram | None)
            or not isinstance(options["duration_histogram_new"], NoOpHistogram | None)
            or not isinstance(request, module.Request)
            or not is_http_instrumentation_enabled()
        ):
            return HTTPXClientInstrumentor._handle_request_wrapper(
                wrapped, instance, args, kwargs, **options
            )
        tracer, semconv = options["tracer"], options["sem_conv_opt_in_mode"]
        request_hook, response_hook = options["request_hook"], options["response_hook"]
        method, url = request.method, request.url
        key = (method, str(url))
        described = HTTPSpans._described.get(key)
        if described is None:
            # A URL a user or operator gave (OPAQUE_URL) may be a secret itself: never kept.
            keep = not request.extensions.get(OPAQUE_URL)
            described = _describe(key, url, semconv, module, options["excluded_urls"], keep)
        name, attributes, excluded = described
        if excluded:
            return wrapped(*args, **kwargs)

        info = RequestInfo(
            method.encode(), url, request.headers, request.stream, request.extensions
        )
        with tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            exception: Exception | None = None
            response = None
            if callable(request_hook):
                request_hook(span, info)
            # The instrumentation copies the headers into a new Headers to inject into; a
            # Request's own are an httpx Headers already, taking the same header in place.
            inject(request.headers)
            try:
                response = wrapped(*args, **kwargs)
            except Exception as exc:  # re-raised below, as the instrumentation does
                exception = exc
                response = getattr(exc, "response", None)
            if isinstance(response, module.Response):
                if span.is_recording():
                    # No header is captured: the answer's headers would come to nothing.
                    status, answered = _answer(
                        response.status_code, response.http_version, semconv, module
                    )
                    span.set_status(status)
                    span.set_attributes(answered)
                if callable(response_hook):
                    response_hook(
                        span,
                        info,
                        ResponseInfo(
                            response.status_code,
                            response.headers,
                            response.stream,
                            response.extensions,
                        ),
                    )
            if exception is not None:
                if span.is_recording() and _report_new(semconv):
                    span.set_attribute(ERROR_TYPE, type(exception).__qualname__)
                raise exception.with_traceback(exception.__traceback__)
        return response


def _describe(  # noqa: PLR0917 - the wrapper's values, passed on
    key: tuple[str, str], url: Any, semconv: Any, module: Any, excluded_urls: Any, keep: bool
) -> _Description:
    """The span name and request attributes the instrumentation gives ``key``, by its code."""
    method, text = key
    attributes: dict[str, Any] = {}
    _apply_request_client_attributes_to_span(attributes, {}, url, method, semconv, module)
    excluded = bool(excluded_urls and excluded_urls.url_disabled(text))
    described = (_get_default_span_name(method), attributes, excluded)
    # Only a URL with nothing to redact is kept (its description holds it too): a token in a
    # path (Telegram's /bot<token>/) or a query stays in memory no longer than its request.
    if keep and url_for_span(text) == text:
        if len(HTTPSpans._described) >= KEPT_REQUESTS:
            HTTPSpans._described.clear()
        HTTPSpans._described[key] = described
    return described


class _Answer:
    """Takes what the instrumentation sets on a span for an answer's status, to keep it."""

    def __init__(self) -> None:
        self.status: Any = None
        self.attributes: dict[str, Any] = {}

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.status = status if description is None else Status(status, description)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


_answers: dict[tuple[int, str, Any], tuple[Any, dict[str, Any]]] = {}


def _answer(
    status_code: int, http_version: str, semconv: Any, module: Any
) -> tuple[Any, dict[str, Any]]:
    """The status and attributes the instrumentation gives a span for this status code and
    HTTP version (no header captured), by its own function, worked out once."""
    key = (status_code, http_version, semconv)
    kept = _answers.get(key)
    if kept is None:
        taken = _Answer()
        _apply_response_client_attributes_to_span(
            taken,  # type: ignore[arg-type]
            status_code,
            http_version,
            semconv,
            module,
        )
        kept = (taken.status, taken.attributes)
        if len(_answers) >= KEPT_REQUESTS:
            _answers.clear()
        _answers[key] = kept
    return kept
