"""Poison messages, and the raw ways to put them on a broker: LPUSH onto a Redis list, or an
AMQP publish with py-amqp. Nothing here goes through Celery's or kombu's producer, so nothing
is validated or repaired on the way in, exactly as from redis-cli or another language."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import amqp
import redis

from herald.broker.limits import MAX_BODY_BYTES, MAX_ENVELOPE_BYTES
from herald.celery_app import QUEUES

JSON = "application/json"
WORKSPACE = "7b0cf7e4-2a58-4f0a-9d50-0c1f4f3f9a11"
CANARY = "poison-canary-token-8c1d2f"


@dataclass(frozen=True)
class Poison:
    """A message no task can be made of, and the words its dead letter's reason must hold."""

    label: str
    reason: str
    body: bytes = b"[[], {}, {}]"
    content_type: str | None = JSON
    headers: dict[str, Any] | None = field(default=None)
    task_id: str | None = None  # set when the headers carry one; None: find it by its bytes

    @property
    def marker(self) -> bytes:
        return self.label.encode()


def _headers(task_id: str, task: str = "herald.posts.publish", **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": task_id, **extra}


def _case(
    label: str, reason: str, body: Any = None, *, raw: bytes | None = None, **kw: Any
) -> Poison:
    task_id = f"poison-{label}"
    headers = kw.pop("headers", None)
    if headers is None:
        headers = _headers(task_id, **kw.pop("header_extra", {}))
    encoded = raw if raw is not None else json.dumps(body).encode()
    return Poison(
        label,
        reason,
        encoded,
        headers=headers,
        task_id=headers.get("id") if headers else None,
        **kw,
    )


def task_level_poisons() -> list[Poison]:
    """Messages the consumer must refuse: the same on every broker."""
    return [
        _case(
            "body-object",
            "must be [args, kwargs, embed], not a JSON object",
            {"post_id": "body-object"},
        ),
        _case("body-string", "the body is a JSON string", "body-string"),
        _case("body-number", "the body is a JSON number", 42),
        _case("body-null", "the body is a JSON null", None),
        _case("body-short", "the body is a JSON array, not [args", [["body-short"], {}]),
        _case("kwargs-list", "kwargs must be an object", [[], ["kwargs-list"], {}]),
        _case("embed-string", "embed must be an object", [[], {}, "embed-string"]),
        _case(
            "callbacks-string",
            "embed field 'callbacks'",
            [[], {}, {"callbacks": "callbacks-string"}],
        ),
        # Celery would run a callback of this shape after the task's work is done, and raise
        # there: the task counted as failed when it succeeded.
        _case(
            "callbacks-unplain",
            "embed field 'callbacks' must be a list of a plain task signature",
            [[], {}, {"callbacks": [{"task": "herald.posts.cancel"}]}],
        ),
        _case(
            "timelimit-word",
            "header 'timelimit' must be a pair",
            [[], {}, {}],
            header_extra={"timelimit": "soon"},
        ),
        _case(
            "timelimit-triple",
            "header 'timelimit' must be a pair",
            [[], {}, {}],
            header_extra={"timelimit": [1, 2, 3]},
        ),
        _case(
            "eta-overflow",
            "header 'eta' must be an ISO 8601 time",
            [[], {}, {}],
            header_extra={"eta": "9999-12-31T23:59:59-14:00"},
        ),
        # A worker holds a delayed message in memory until it is due (and on Redis one held past
        # the visibility timeout is delivered again): a far one is refused, not held.
        _case(
            "eta-far",
            "s ahead, more than the",
            [[], {}, {}],
            header_extra={"eta": "2100-01-01T00:00:00+00:00"},
        ),
        _case(
            "retries-text",
            "header 'retries' must be a count",
            [[], {}, {}],
            header_extra={"retries": "three"},
        ),
        # Herald's backoff raises 2 to the retries a message says it has had.
        _case(
            "retries-huge",
            "header 'retries' must be a count from 0 to 1000",
            [[], {}, {}],
            header_extra={"retries": 10**12},
        ),
        _case("not-json", "cannot be decoded", raw=b"\xff\xfe{not json not-json \x00"),
        _case(
            "pickle",
            "content type 'application/x-python-serialize' refused",
            raw=pickle.dumps({"marker": "pickle"}),
            content_type="application/x-python-serialize",
        ),
        _case(
            "raw-data",
            "content type 'application/data' refused",
            raw=b"raw-data",
            content_type="application/data",
        ),
        _case(
            "unknown-task",
            "unknown task 'herald.no_such_task'",
            [[], {"unknown-task": 1}, {}],
            headers=_headers(
                "poison-unknown-task", task="herald.no_such_task", x_workspace_id=WORKSPACE
            ),
        ),
        _case(
            "celery-builtin",
            "Celery's built-in tasks do not run on Herald",
            [
                [{"task": "herald.posts.publish", "args": [], "kwargs": {}, "options": {}}, []],
                {},
                {},
            ],
            headers=_headers("poison-celery-builtin", task="celery.starmap"),
        ),
        _case(
            "no-id",
            "the task id is missing",
            [[], {"marker": "no-id"}, {}],
            headers={"lang": "py", "task": "herald.posts.publish"},
        ),
        _case("no-task", "no task name", [[], {"marker": "no-task"}, {}], headers={}),
        # Past the size bound: refused before the body is decoded, whatever it holds.
        _case(
            "oversized",
            "bytes, more than the",
            [[], {"post_id": "oversized" + "x" * MAX_BODY_BYTES}, {}],
        ),
        # A few kilobytes that would unpack into far more than the bound (kombu decompresses
        # before anything else reads the message): decompression stops at the bound.
        _case(
            "zlib-bomb",
            "unpacks into more than",
            raw=zlib.compress(
                json.dumps([["zlib-bomb" + " " * 4 * MAX_BODY_BYTES], {}, {}]).encode(), 9
            ),
            header_extra={"compression": "application/x-gzip"},
        ),
        _case(
            "zlib-truncated",
            "cannot be decoded",
            raw=zlib.compress(b'[["zlib-truncated"], {}, {}]')[:-6],
            header_extra={"compression": "application/x-gzip"},
        ),
        _case(
            "unknown-compression",
            "cannot be decoded",
            raw=b"unknown-compression",
            header_extra={"compression": "application/x-snappy"},
        ),
        # Well-formed for the broker, refused by the task: the payload (with a NUL byte and a
        # workspace id) is recorded by the task base, through the same code.
        _case(
            "payload-nul",
            "invalid payload for herald.posts.publish",
            [[], {"post_id": "payload-nul\u0000", "workspace_id": WORKSPACE}, {}],
        ),
    ]


def envelope_poisons() -> list[Poison]:
    """Redis list items kombu cannot make a message of (the transport must refuse them)."""
    good = envelope(b"[[], {}, {}]", JSON, _headers("poison-x"), "default")
    no_properties = json.loads(good)
    no_properties.pop("properties")
    no_properties["marker"] = "no-properties"
    bad_base64 = json.loads(good)
    bad_base64["body"] = "bad-base64!!!"
    bad_base64["headers"]["id"] = "poison-bad-base64"
    no_tag = json.loads(good)
    no_tag["properties"].pop("delivery_tag")
    no_tag["headers"]["id"] = "poison-no-tag"
    list_headers = json.loads(good)
    list_headers["headers"] = ["list-headers"]
    # Refused by the transport (a priority that is not an integer) with a secret inside its
    # base64 body: the letter keeps the body decoded, so the redaction sees the secret.
    secret_body = json.loads(
        envelope(
            json.dumps([[], {"provider_settings": {"access_token": CANARY}}, {}]).encode(),
            JSON,
            _headers("poison-secret-base64"),
            "default",
        )
    )
    secret_body["properties"]["priority"] = "high"
    # Refused for its envelope, with a body nested deeper than the JSON parser goes: reading
    # the body for the dead letter raises RecursionError, not ValueError.
    deep_body = json.loads(envelope(b"[" * 5000 + b"]" * 5000, JSON, _headers("x"), "default"))
    deep_body["properties"].pop("delivery_tag")
    deep_body["marker"] = "deep-body"
    return [
        Poison("raw-garbage", "not JSON", raw_item(b"\x00\xff raw-garbage")),
        Poison("json-array", "not a kombu envelope", raw_item(b'["json-array", 1, 2]')),
        Poison("no-properties", "no 'properties' object", raw_item(json.dumps(no_properties))),
        Poison(
            "bad-base64",
            "not valid base64",
            raw_item(json.dumps(bad_base64)),
            task_id="poison-bad-base64",
        ),
        Poison("no-tag", "no delivery_tag", raw_item(json.dumps(no_tag)), task_id="poison-no-tag"),
        Poison("list-headers", "headers are not an object", raw_item(json.dumps(list_headers))),
        Poison(
            "secret-base64",
            "priority is not an integer",
            raw_item(json.dumps(secret_body)),
            task_id="poison-secret-base64",
        ),
        Poison("deep-body", "no delivery_tag", raw_item(json.dumps(deep_body))),
        Poison(
            "huge-item",
            "bytes, more than the",
            raw_item(b'{"huge-item": "' + b"x" * MAX_ENVELOPE_BYTES + b'"}'),
        ),
    ]


def raw_item(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def envelope(body: bytes, content_type: str | None, headers: Any, queue: str) -> bytes:
    """A kombu Redis envelope around ``body``, as a producer in another language writes it."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8" if content_type == JSON else "binary",
            "content-type": content_type,
            "headers": headers,
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "herald", "routing_key": queue},
                "priority": 0,
            },
        }
    ).encode()


def push_to_redis(url: str, prefix: str, items: list[tuple[str, bytes]]) -> None:
    """LPUSH each ``(queue, item)`` onto the queue's list, as ``redis-cli LPUSH`` would."""
    client = redis.Redis.from_url(url)
    try:
        for queue, item in items:
            client.lpush(prefix + queue, item)
    finally:
        client.close()


def publish_to_rabbitmq(url: str, messages: list[tuple[str, Poison]]) -> None:
    """Publish each poison with py-amqp to exchange ``herald`` with the queue's routing key,
    each confirmed by RabbitMQ and routed to a queue (an unroutable one comes back and raises):
    a letter that never comes is then the consumer's to explain, not a publish lost on the way."""
    parsed = urlparse(url)
    connection = amqp.Connection(
        host=f"{parsed.hostname}:{parsed.port or 5672}",
        userid=unquote(parsed.username or "guest"),
        password=unquote(parsed.password or "guest"),
        virtual_host=unquote(parsed.path[1:]) or "/",
        confirm_publish=True,
    )
    connection.connect()
    try:
        channel = connection.channel()
        for queue, poison in messages:
            properties: dict[str, Any] = {"delivery_mode": 2}
            if poison.content_type is not None:
                properties["content_type"] = poison.content_type
            if poison.headers is not None:
                properties["application_headers"] = poison.headers
            channel.basic_publish(
                amqp.Message(poison.body, **properties),
                exchange="herald",
                routing_key=queue,
                mandatory=True,
                confirm_timeout=30,
            )
    finally:
        connection.close()


def spread(poisons: list[Poison]) -> list[tuple[str, Poison]]:
    """Each poison on a queue of its own turn: every Herald queue gets some."""
    return [(QUEUES[i % len(QUEUES)], poison) for i, poison in enumerate(poisons)]
