"""Herald's statement spans (herald/telemetry/statements.py) are the SQLAlchemy
instrumentation's own: the same statements run on an engine traced by the instrumentation's
``EngineTracer`` and on one traced by ``StatementTracer`` give spans alike in scope, name, kind,
attributes and status, on Postgres (a URL with a host) and on SQLite (attributes from the
connection), the first time a statement text is seen and every later time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from herald.telemetry import statements
from herald.telemetry.statements import StatementTracer, statement_tracer
from tests.conftest import TEST_DATABASE_URL

NOTES = Table("span_notes", MetaData(), Column("id", Integer), Column("body", String(40)))


def _work(engine: Engine) -> None:
    """Compiled and text statements, a comment first, many rows, and a failing statement."""
    with engine.begin() as conn:
        NOTES.drop(conn, checkfirst=True)
        NOTES.create(conn)
        conn.execute(insert(NOTES), [{"id": n, "body": f"note {n}"} for n in range(3)])
        conn.execute(select(NOTES.c.body).where(NOTES.c.id == 1)).all()
        conn.execute(text("/* why */ SELECT count(*) FROM span_notes")).one()
        conn.exec_driver_sql("select 1").one()
    with pytest.raises(DBAPIError), engine.connect() as conn:
        conn.execute(text("SELECT missing FROM no_such_table")).all()
    with engine.begin() as conn:
        NOTES.drop(conn)


def _seen(span: ReadableSpan) -> tuple[Any, ...]:
    scope = span.instrumentation_scope
    return (
        (scope.name, scope.version, scope.schema_url) if scope else None,
        span.name,
        span.kind,
        dict(span.attributes or {}),
        span.status.status_code,
        span.status.description,
    )


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider, exported
    provider.shutdown()


def _spans_of(
    url: str,
    traced: Callable[[Engine], object],
    exported: InMemorySpanExporter,
    times: int = 1,
) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        traced(engine)
        for _ in range(times):
            _work(engine)
    finally:
        engine.dispose()
    spans = [_seen(span) for span in exported.get_finished_spans()]
    exported.clear()
    return spans


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_statement_spans_are_the_instrumentations_own(
    database: str,
    tmp_path: Path,
    provider: tuple[TracerProvider, InMemorySpanExporter],
    request: pytest.FixtureRequest,
) -> None:
    tracer_provider, exported = provider
    if database == "postgres":
        request.getfixturevalue("engine")  # the run's database exists
    url = TEST_DATABASE_URL if database == "postgres" else f"sqlite:///{tmp_path / 'spans.db'}"
    tracer = statement_tracer(tracer_provider)

    upstream = _spans_of(
        url,
        lambda e: EngineTracer(tracer, e, NoOpUpDownCounter("unused"), enable_commenter=False),
        exported,
    )
    herald = _spans_of(url, lambda e: StatementTracer(tracer, e), exported, times=2)

    assert len(upstream) >= 8
    assert herald == upstream * 2  # described once, then from what was kept
    scope, name, _, attributes, status, description = upstream[-2]
    assert scope[0] == SQLAlchemyInstrumentor.__module__  # the instrumentor's tracer scope
    assert name.startswith("SELECT")
    assert "no_such_table" in attributes["db.statement"]
    assert status.name == "ERROR"
    assert "no_such_table" in (description or "")


def test_kept_descriptions_are_bounded(
    monkeypatch: pytest.MonkeyPatch, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exported = provider
    monkeypatch.setattr(statements, "KEPT_STATEMENTS", 3)
    engine = create_engine("sqlite://")
    traced = StatementTracer(statement_tracer(tracer_provider), engine)
    with engine.connect() as conn:
        for n in range(10):
            conn.exec_driver_sql(f"select {n}").one()
    engine.dispose()
    assert len(traced._described) <= 3
    assert [s.attributes["db.statement"] for s in exported.get_finished_spans()] == [
        f"select {n}" for n in range(10)
    ]
