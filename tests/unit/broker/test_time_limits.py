"""A producer may shorten a task's time limits, never lengthen them past the worker's: the
hard limit is what frees a process stuck in a call that never returns. The consumer's
inspection brings a message's ``timelimit`` (hard, soft) within the worker's before Celery
reads it, in the headers (protocol 2) or in a protocol 1 body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kombu.message import Message

from herald.broker.inspection import inspect_message

TASK = "herald.posts.publish"
WORKER = (150.0, 120.0)  # hard, soft


def _message(headers: dict[str, Any], body: Any) -> Message:
    return Message(
        body=json.dumps(body).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        channel=None,
    )


@pytest.mark.parametrize(
    ("asked", "runs_with"),
    [
        ([None, None], [None, None]),  # the worker's own
        ([60, 30], [60, 30]),  # shorter: as asked
        ([86_400, 86_000], [150.0, 120.0]),  # longer: the worker's
        ([86_400, None], [150.0, None]),
        ([0, 0], [0, 0]),  # Celery reads 0 as "the worker's"
    ],
)
def test_a_protocol_2_timelimit_is_brought_within_the_workers(
    asked: list[float | None], runs_with: list[float | None]
) -> None:
    message = _message({"task": TASK, "id": "t-1", "timelimit": asked}, [[], {}, {}])

    assert inspect_message(message, {TASK}, WORKER) is None

    assert list(message.headers["timelimit"]) == runs_with


def test_a_protocol_1_timelimit_is_capped_in_the_body() -> None:
    message = _message({}, {"task": TASK, "id": "t-2", "args": [], "timelimit": [9999, 9999]})

    assert inspect_message(message, {TASK}, WORKER) is None

    assert message.decode()["timelimit"] == [150.0, 120.0]  # what Celery reads, decoded once
