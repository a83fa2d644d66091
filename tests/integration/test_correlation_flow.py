"""Correlation, causation and tracing across real task hops on a real worker and Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald.models import DeadLetter
from herald.settings import get_settings
from tests.fixtures.database import service_session
from tests.fixtures.polling import eventually
from tests.integration import flow_tasks
from tests.integration.broker.poison import JSON, envelope


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    flow_tasks.seen.clear()
    flow_tasks.strict_runs.clear()


def test_three_hop_flow_shares_one_correlation_causation_chain_and_trace(
    worker: Any, spans: InMemorySpanExporter, log_lines: list[dict[str, Any]]
) -> None:
    correlation_id = "corr-3hop-0001"
    flow_tasks.hop_a.apply_async(headers={"x_correlation_id": correlation_id})

    eventually(lambda: any(s["hop"] == "c" for s in flow_tasks.seen), what="hop c to run")
    hops = {(s["hop"], s["retries"]): s for s in flow_tasks.seen}
    a, b0, b1, c = hops[("a", 0)], hops[("b", 0)], hops[("b", 1)], hops[("c", 0)]

    # One correlation everywhere, continued from the caller's header.
    assert {s["correlation_id"] for s in flow_tasks.seen} == {correlation_id}
    # Each hop's cause is its parent task; a retry keeps the cause of the run it repeats.
    assert a["causation_id"] is None
    assert b0["task_id"] == b1["task_id"]
    assert b0["causation_id"] == a["task_id"]
    assert b1["causation_id"] == a["task_id"]
    assert c["causation_id"] == b1["task_id"]

    flow_ids = {a["task_id"], b0["task_id"], c["task_id"]}
    eventually(
        lambda: sum(1 for line in log_lines if line.get("event") == "task.succeeded") >= 3,
        what="three task.succeeded lines",
    )
    flow_lines = [line for line in log_lines if line.get("task_id") in flow_ids]
    events = {line["event"] for line in flow_lines}
    assert {"flow.a.enqueueing_b", "flow.b.failing_once", "task.retrying", "flow.c.received"} <= (
        events
    )
    assert all(line["correlation_id"] == correlation_id for line in flow_lines), flow_lines
    assert all("trace_id" in line and "span_id" in line for line in flow_lines)

    # Every span of the flow belongs to one trace, from the test's enqueue to hop C.
    eventually(lambda: len(spans.get_finished_spans()) >= 6, what="spans")
    flow_spans = [
        s for s in spans.get_finished_spans() if (s.attributes or {}).get("celery.task_name")
    ]
    names = {s.name for s in flow_spans}
    assert {"run/tests.flow.a", "run/tests.flow.b", "run/tests.flow.c"} <= names
    assert len({s.context.trace_id for s in flow_spans}) == 1
    assert {line["trace_id"] for line in flow_lines} == {
        format(flow_spans[0].context.trace_id, "032x")
    }


def test_a_raw_message_without_correlation_is_correlated_by_its_task_id(
    worker: Any, redis_client: Any
) -> None:
    """As celery-node or redis-cli send it: a protocol 2 message with no x_correlation_id."""
    task_id = "raw-" + uuid.uuid4().hex
    headers = {"lang": "js", "task": "tests.flow.a", "id": task_id, "root_id": task_id}
    item = envelope(b'[[], {}, {"callbacks": null, "errbacks": null}]', JSON, headers, "default")
    redis_client.lpush(get_settings().broker_key_prefix + "default", item)

    eventually(lambda: any(s["hop"] == "c" for s in flow_tasks.seen), what="hop c to run")
    assert {s["correlation_id"] for s in flow_tasks.seen} == {task_id}


def test_message_without_correlation_gets_a_fresh_one(worker: Any) -> None:
    flow_tasks.hop_a.apply_async()
    eventually(lambda: any(s["hop"] == "c" for s in flow_tasks.seen), what="hop c to run")
    ids = {s["correlation_id"] for s in flow_tasks.seen}
    assert len(ids) == 1
    (only,) = ids
    assert only
    assert len(only) == 36


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"count": "many", "label": "x"}, "count"),
        ({"count": 1, "label": "x", "surprise": True}, "surprise: Extra inputs are not permitted"),
        ({"label": "x"}, "count: Field required"),
        ({"count": -1, "label": ""}, "label"),
    ],
)
def test_malformed_payload_is_rejected_recorded_not_retried_and_worker_carries_on(
    worker: Any,
    committed: Engine,
    log_lines: list[dict[str, Any]],
    payload: dict[str, Any],
    problem: str,
) -> None:
    bad = flow_tasks.strict_task.apply_async(kwargs=payload)
    flow_tasks.strict_task.apply_async(kwargs={"count": 2, "label": "next"})

    eventually(lambda: len(flow_tasks.strict_runs) == 1, what="the good message to run")
    assert flow_tasks.strict_runs[0].label == "next"

    rejected = [line for line in log_lines if line.get("event") == "task.rejected"]
    assert len(rejected) == 1
    assert problem in rejected[0]["reason"]
    assert rejected[0]["task_id"] == bad.id
    assert not [line for line in log_lines if line.get("event") == "task.retrying"]

    with service_session() as s:  # dead letters of any workspace
        letters = s.scalars(select(DeadLetter)).all()
    assert [(d.task_name, d.task_id) for d in letters] == [("tests.strict", bad.id)]
    assert problem in letters[0].reason


def test_positional_payload_is_rejected_with_a_clear_reason(
    worker: Any, log_lines: list[dict[str, Any]]
) -> None:
    flow_tasks.strict_task.apply_async(args=[{"count": 1, "label": "x"}])
    flow_tasks.strict_task.apply_async(kwargs={"count": 3, "label": "after"})
    eventually(lambda: len(flow_tasks.strict_runs) == 1, what="the good message to run")
    (rejected,) = [line for line in log_lines if line.get("event") == "task.rejected"]
    assert "keyword arguments" in rejected["reason"]
