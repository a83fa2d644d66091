"""What a dead letter keeps of a refused message: any bytes, storable, redacted, bounded."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime

from herald.broker.dead_letters import (
    MAX_PAYLOAD_CHARS,
    MAX_RAW_CHARS,
    storable_payload,
    storable_raw,
    workspace_named,
)
from herald.broker.inspection import identity_of


def test_raw_bytes_keep_nul_and_undecodable_bytes_as_escapes() -> None:
    assert storable_raw(b"ok \x00 \xff\xfe end") == "ok \\x00 \\xff\\xfe end"


def test_raw_bytes_are_redacted_like_log_lines() -> None:
    text = storable_raw(b'{"headers": "Authorization: Bearer abcdefghijklmnop"}')
    assert "abcdefghijklmnop" not in text
    assert "[REDACTED]" in text


def test_raw_bytes_are_bounded_and_say_how_much_there_was() -> None:
    text = storable_raw(b"x" * (MAX_RAW_CHARS * 3))
    assert len(text) < MAX_RAW_CHARS + 100
    assert f"{MAX_RAW_CHARS * 3} bytes in all" in text


def test_payload_becomes_json_postgres_accepts() -> None:
    payload = {
        "nul\x00key": "nul\x00value",
        "when": datetime(2026, 1, 1, tzinfo=UTC),
        "id": uuid.UUID(int=1),
        "blob": b"\x00\xff",
        "nan": math.nan,
        "access_token": "secret-value",
    }
    stored = storable_payload(payload)
    text = json.dumps(stored, allow_nan=False)  # raises on NaN, which JSONB refuses
    assert "\x00" not in text
    assert "\\\\x00" in text
    assert stored["access_token"] == "[REDACTED]"
    assert stored["when"].startswith("2026-01-01")


def test_payload_nesting_and_size_are_bounded() -> None:
    deep: object = "bottom"
    for _ in range(20):
        deep = {"down": deep}
    assert "[nested too deep]" in json.dumps(storable_payload(deep))
    huge = storable_payload({"content": "y" * (MAX_PAYLOAD_CHARS * 2)})
    assert set(huge) == {"truncated"}
    assert len(huge["truncated"]) == MAX_PAYLOAD_CHARS


def test_a_payload_that_is_not_an_object_is_kept_under_value() -> None:
    assert storable_payload(["a", 1]) == {"value": ["a", 1]}
    assert storable_payload(None) == {}


def test_a_letter_names_the_payloads_workspace_over_the_headers_claim() -> None:
    # Under row-level security a letter is shown to its workspace: the header is only the
    # sender's word, the payload is what the message was for.
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    headers = {"task": "herald.posts.schedule", "id": "t-1", "x_workspace_id": theirs}

    assert identity_of(headers, [[], {"workspace_id": ours}, {}]).workspace_id == ours
    assert workspace_named({"workspace_id": ours}, theirs) == ours
    # No usable workspace in the payload: the header's, as far as it is an id.
    assert identity_of(headers, [[], {"workspace_id": "not-a-uuid"}, {}]).workspace_id == theirs
    assert workspace_named({}, None) is None
