"""A span for every SQL statement, at the cost of a span.

The SQLAlchemy instrumentation's ``EngineTracer`` works out each statement's span from scratch
on every execution: the attributes from the engine's URL (a dict built through the semantic
conventions' helpers), the database name from the connection, the operation name (a regular
expression over the whole statement and a ``split()`` of all of it, 3,300 characters for the
publish path's claim), then seven ``set_attribute`` calls, each cleaning its value under the
span's lock. That was about two thirds of what a statement span cost the publish path
(docs/performance.md, third round).

:class:`StatementTracer` is that ``EngineTracer`` with one change: the span's name and
attributes are worked out by the instrumentation's own functions the first time an engine
runs a statement text, kept, and given to ``start_span`` at once every later time. The spans
are the ones the instrumentation makes (same tracer scope, name, kind, attributes, end and
error status; tests/unit/telemetry/test_statements.py compares them), and every listener but
the before-execute hook is the instrumentation's. What differs:

- no per-checkout connection-usage counter (Herald passes the instrumentation no meter: pool
  use is not one of Herald's metrics, docs/monitoring.md);
- no ``connect`` span per pool checkout (it said nothing about the work; a slow connection
  shows in the first statement's span);
- no SQL commenter (Herald never turns it on: a comment would make every statement text
  unique to its trace).

The kept descriptions are bounded (:data:`KEPT_STATEMENTS` per engine; the set is emptied
when full): SQLAlchemy's compiled statements are a small, fixed set, and a text statement with
literals in it costs only its own description.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation._semconv import (
    _get_schema_url_for_signal_types,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
)
from opentelemetry.instrumentation.sqlalchemy.engine import (
    EngineTracer,
    _get_attributes_from_cursor_or_conn,
    _get_attributes_from_url,
    _get_db_name_from_cursor_or_conn,
)
from opentelemetry.instrumentation.sqlalchemy.version import __version__
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import NoOpUpDownCounter
from sqlalchemy.engine import Engine

#: Statement texts whose span description one engine keeps.
KEPT_STATEMENTS = 1024
#: The instrumentation's scope, as its own instrumentor names its tracer.
SCOPE = "opentelemetry.instrumentation.sqlalchemy"

_Description = tuple[str, dict[str, Any]]


class _Attributes:
    """Takes the attributes the instrumentation sets on a span, to keep them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.values[key] = value


class StatementTracer(EngineTracer):
    """The instrumentation's ``EngineTracer`` for ``engine``, describing each statement text
    once (see the module docstring)."""

    def __init__(self, tracer: trace.Tracer, engine: Engine) -> None:
        super().__init__(tracer, engine, NoOpUpDownCounter("unused"), enable_commenter=False)
        self._described: dict[str, _Description] = {}

    def _before_cur_exec(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        params: Any,
        context: Any,
        _executemany: bool,
    ) -> tuple[str, Any]:
        if not is_instrumentation_enabled():
            return statement, params
        described = self._described.get(statement)
        if described is None:
            described = self._describe(conn, cursor, statement)
        name, attributes = described
        context._otel_span = self.tracer.start_span(
            name, kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        return statement, params

    def _describe(self, conn: Any, cursor: Any, statement: str) -> _Description:
        """The span name and attributes the instrumentation gives ``statement``, by its code."""
        attributes, found = _get_attributes_from_url(
            conn.engine.url, self._sem_conv_opt_in_mode_db, self._sem_conv_opt_in_mode_http
        )
        if not found:
            attributes = _get_attributes_from_cursor_or_conn(
                self.vendor,
                conn,
                cursor,
                attributes,
                self._sem_conv_opt_in_mode_db,
                self._sem_conv_opt_in_mode_http,
            )
        db_name = _get_db_name_from_cursor_or_conn(self.vendor, conn, cursor)
        taken = _Attributes()
        self._set_db_client_span_attributes(taken, statement, db_name, attributes)
        described = (self._operation_name(db_name, statement), taken.values)
        if len(self._described) >= KEPT_STATEMENTS:
            self._described.clear()
        self._described[statement] = described
        return described

    # Pool use is not counted (no meter): these listeners do nothing.
    def _pool_connect(self, *_: Any) -> None:
        return None

    def _pool_close(self, *_: Any) -> None:
        return None

    def _pool_checkin(self, *_: Any) -> None:
        return None

    def _pool_checkout(self, *_: Any) -> None:
        return None


def statement_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """The tracer the instrumentation's own instrumentor would make (scope, version, schema),
    of ``provider`` (the global one by default)."""
    _OpenTelemetrySemanticConventionStability._initialize()
    schema_url = _get_schema_url_for_signal_types(
        [_OpenTelemetryStabilitySignalType.DATABASE, _OpenTelemetryStabilitySignalType.HTTP]
    )
    return trace.get_tracer(SCOPE, __version__, provider, schema_url=schema_url)


def trace_statements(engine: Engine) -> StatementTracer:
    """Make a span of every statement ``engine`` runs, from now on."""
    return StatementTracer(statement_tracer(), engine)


def untrace_statements() -> None:
    """Remove every engine's statement listeners (tests, benches)."""
    EngineTracer.remove_all_event_listeners()
