"""The machinery of windowed figures: windows, samples, and aggregate queries over a table
read through its time column (see :mod:`herald.telemetry.figures` for the catalogue).

An aggregate groups by the labels asked for and returns, per series, its value and ``count``
(the observations behind it). Percentiles use ``percentile_cont`` on Postgres; SQLite has
none, so there the window's values are read and interpolated the same way in Python.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, QueryableAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

Column = ColumnElement[Any] | QueryableAttribute[Any]


class FigureError(ValueError):
    """A figure was asked for in a way it cannot answer (unknown name, label, window)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise FigureError("window bounds must be timezone-aware")
        if self.start >= self.end:
            raise FigureError("a window must start before it ends")

    @classmethod
    def last(cls, seconds: float, end: datetime) -> Window:
        return cls(end - timedelta(seconds=seconds), end)


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a figure: its labels, its value (None without data) and its count."""

    labels: Mapping[str, str]
    value: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Query:
    window: Window
    workspace_id: uuid.UUID | None = None
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)


# -- SQL helpers -----------------------------------------------------------------------------------


class seconds_between(FunctionElement[float]):  # noqa: N801 - reads as a SQL function
    """``later - earlier`` in seconds, on Postgres and SQLite."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "postgresql")
def _seconds_pg(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as Postgres' ``percentile_cont``."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _workspace_value(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FigureError(f"workspace_id filter {value!r} is not a UUID") from None


@dataclass(frozen=True, slots=True)
class Source:
    """A table read through its time column, and the columns its labels come from."""

    time: InstrumentedAttribute[datetime]
    workspace: InstrumentedAttribute[Any]
    dims: Mapping[str, Column]
    text_workspace: bool = False  # workspace ids kept as text (the counters' scope)
    #: Rows are buckets of this many seconds, keyed on their start (the counters' minutes). A
    #: bucket counts when it starts inside the window; a window shorter than a bucket, which
    #: may hold no bucket's start at all, reads the bucket its end falls in (the figure's
    #: resolution is the bucket).
    bucket_s: float = 0.0

    def _workspace(self, value: uuid.UUID | str) -> Any:
        if self.text_workspace:
            return str(value)
        return value if isinstance(value, uuid.UUID) else _workspace_value(value)

    def where(self, stmt: Select[Any], q: Query, *, windowed: bool = True) -> Select[Any]:
        if windowed:
            start, end = q.window.start, q.window.end
            if self.bucket_s and (end - start).total_seconds() < self.bucket_s:
                last = end - timedelta(microseconds=1)
                start = min(start, last - timedelta(seconds=last.timestamp() % self.bucket_s))
            stmt = stmt.where(self.time >= start, self.time < end)
        if q.workspace_id is not None:
            stmt = stmt.where(self.workspace == self._workspace(q.workspace_id))
        for name, wanted in q.filters.items():
            value = self._workspace(wanted) if name == "workspace_id" else wanted
            stmt = stmt.where(self.dims[name] == value)
        return stmt

    def groups(self, q: Query) -> list[ColumnElement[Any]]:
        return [self.dims[name].label(f"g_{name}") for name in q.group_by]


def to_samples(rows: Iterable[Any], q: Query) -> list[Sample]:
    out = []
    for row in rows:
        *keys, value, count = row
        out.append(
            Sample(
                labels={name: _label(key) for name, key in zip(q.group_by, keys, strict=True)},
                value=None if value is None or not count else float(value),
                count=int(count or 0),
            )
        )
    return out


def aggregate(
    source: Source,
    value: ColumnElement[Any],
    count: ColumnElement[Any],
    *,
    where: Sequence[ColumnElement[bool]] = (),
    windowed: bool = True,
    join: Callable[[Select[Any]], Select[Any]] = lambda stmt: stmt,
) -> Callable[[Session, Query], list[Sample]]:
    def compute(session: Session, q: Query) -> list[Sample]:
        groups = source.groups(q)
        stmt = source.where(join(select(*groups, value, count)), q, windowed=windowed)
        stmt = stmt.where(*where)
        if groups:
            stmt = stmt.group_by(*groups)
        samples = to_samples(session.execute(stmt).all(), q)
        if not groups and not samples:
            samples = [Sample({}, None, 0)]
        return samples

    return compute


def gauge(
    source: Source, counted: Column, where: Sequence[ColumnElement[bool]]
) -> Callable[[Session, Query], list[Sample]]:
    """A count of rows as they are now: always known, so one sample per series."""
    return aggregate(source, func.count(counted), literal(1), where=where, windowed=False)


def percentile(
    source: Source,
    expr: ColumnElement[Any],
    fraction: float,
    *,
    join: Callable[[Select[Any]], Select[Any]] = lambda stmt: stmt,
    where: Sequence[ColumnElement[bool]] = (),
) -> Callable[[Session, Query], list[Sample]]:
    def compute(session: Session, q: Query) -> list[Sample]:
        groups = source.groups(q)
        if session.get_bind().dialect.name == "postgresql":
            value = func.percentile_cont(fraction).within_group(expr)
            stmt = source.where(join(select(*groups, value, func.count(expr))), q).where(*where)
            if groups:
                stmt = stmt.group_by(*groups)
            samples = to_samples(session.execute(stmt).all(), q)
        else:
            stmt = source.where(join(select(*groups, expr)), q).where(*where, expr.is_not(None))
            series: dict[tuple[Any, ...], list[float]] = {}
            for *keys, observed in session.execute(stmt).all():
                series.setdefault(tuple(keys), []).append(float(observed))
            samples = to_samples(
                ((*k, percentile_cont(v, fraction), len(v)) for k, v in series.items()), q
            )
        return samples or ([Sample({}, None, 0)] if not groups else [])

    return compute
