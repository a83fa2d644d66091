"""A message runs under the worker's time limits, whatever its ``timelimit`` header asks. A
longer limit would keep a process stuck in a call that never returns; a shorter one killed the
task mid-transaction or mid-call: a producer's 1 ms soft limit lost its post without a trace.
The consumer's inspection replaces a message's ``timelimit`` (hard, soft) before Celery reads
it, in the headers (protocol 2) or in a protocol 1 body; Celery reads None as the task's own
limit (the worker's configuration, or an operator's checked ``time_limit`` control)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kombu.message import Message

from herald.broker.inspection import inspect_message

TASK = "herald.posts.publish"


def _message(headers: dict[str, Any], body: Any) -> Message:
    return Message(
        body=json.dumps(body).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        channel=None,
    )


@pytest.mark.parametrize(
    "asked",
    [
        [None, None],  # what Celery's own producer sends
        [60, 30],  # shorter
        [None, 0.001],  # a soft limit no task can meet
        [0.01, 0.005],
        [86_400, 86_000],  # longer
        [86_400, None],
        [0, 0],
    ],
)
def test_a_protocol_2_timelimit_gives_way_to_the_workers(asked: list[float | None]) -> None:
    message = _message({"task": TASK, "id": "t-1", "timelimit": asked}, [[], {}, {}])

    assert inspect_message(message, {TASK}) is None

    assert list(message.headers["timelimit"]) == [None, None]


def test_a_protocol_1_timelimit_gives_way_in_the_body() -> None:
    message = _message({}, {"task": TASK, "id": "t-2", "args": [], "timelimit": [0.01, 0.01]})

    assert inspect_message(message, {TASK}) is None

    assert message.decode()["timelimit"] == [None, None]  # what Celery reads, decoded once


def test_a_message_without_timelimit_is_left_as_it_is() -> None:
    message = _message({"task": TASK, "id": "t-3"}, [[], {}, {}])

    assert inspect_message(message, {TASK}) is None

    assert "timelimit" not in message.headers
