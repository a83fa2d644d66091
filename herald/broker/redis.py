"""kombu's Redis transport, guarded where it parses a queue item.

On Redis a message is a JSON envelope (``body``, ``headers``, ``properties`` with the delivery
tag and ``body_encoding``) pushed onto a list. kombu pops it with BRPOP and parses it inside the
worker's event loop; an item that is not JSON, not an object, lacks ``properties`` or carries
an invalid base64 body raises there, outside every handler: the worker exits, and the item,
already popped, is gone.

:class:`Channel` checks each popped item where redis-py parses the BRPOP reply (a response
callback on the channel's consuming client), before kombu sees it. An item kombu cannot make a
message of is recorded as a dead letter and dropped from the reply, which kombu then treats as
an empty poll; a good item passes unchanged. Messages on Celery's control channel (pub/sub)
are checked the same way where kombu parses them. Task-level checks (content type, body shape,
headers) are the consumer's (:mod:`herald.broker.consumer`), the same for every broker.

The channel also survives a lost connection with a task in flight, which kombu's does not (see
:meth:`Channel._connparams`).

Selected with Celery's ``broker_transport`` for ``redis://``, ``rediss://`` and ``sentinel://``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads
from kombu.utils.objects import cached_property

from herald.broker.dead_letters import Identity, record_dead_letter
from herald.broker.inspection import identity_of
from herald.broker.limits import MAX_ENVELOPE_BYTES, too_large
from herald.telemetry.errors import describe_error


class EnvelopeRefused(Exception):
    """A queue item that kombu cannot make a message of."""


def check_envelope(item: bytes) -> None:
    """Raise :class:`EnvelopeRefused` unless kombu's virtual transport can read ``item``."""
    if len(item) > MAX_ENVELOPE_BYTES:  # refused unparsed (herald.broker.limits)
        raise EnvelopeRefused(too_large(len(item), "the queue item", MAX_ENVELOPE_BYTES))
    try:
        envelope = loads(item.decode("utf-8"))
    except Exception as exc:  # whatever the parser raises, the item is bad
        error_type, error = describe_error(exc)
        raise EnvelopeRefused(f"the queue item is not JSON: {error_type}: {error}") from None
    if not isinstance(envelope, dict):
        raise EnvelopeRefused("the queue item is not a kombu envelope (a JSON object)")
    properties = envelope.get("properties")
    if not isinstance(properties, dict):
        raise EnvelopeRefused("the envelope has no 'properties' object")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise EnvelopeRefused("the envelope's properties carry no delivery_tag string")
    delivery = properties.get("delivery_info")
    if not isinstance(delivery, dict) or not all(
        isinstance(delivery.get(key), str) for key in ("exchange", "routing_key")
    ):
        raise EnvelopeRefused("the envelope's delivery_info lacks an exchange and routing key")
    priority = properties.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise EnvelopeRefused("the envelope's priority is not an integer")
    for key in ("content-type", "content-encoding"):
        if not isinstance(envelope.get(key), str | None):
            raise EnvelopeRefused(f"the envelope's {key} is not a string")
    if not isinstance(envelope.get("headers"), dict | None):
        raise EnvelopeRefused("the envelope's headers are not an object")
    _check_body(envelope.get("body"), properties.get("body_encoding"))


def _check_body(body: Any, encoding: Any) -> None:
    if body is None or body == "":
        return
    if not isinstance(body, str):
        raise EnvelopeRefused("the envelope's body is not a string")
    if encoding is None:
        return
    if encoding != "base64":
        raise EnvelopeRefused(f"unknown body_encoding {encoding!r:.50}")
    try:
        base64.b64decode(body.encode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeRefused(f"the body is not valid base64: {exc}") from None


def refused_item(item: bytes) -> tuple[Identity, bytes | str]:
    """What a dead letter keeps of a refused ``item``: the identity it reveals (its headers and
    body, as far as they are readable) and its text. A base64 body is kept decoded, marked so,
    because the redaction cannot see a secret inside base64; an item it cannot read is kept
    as it came."""
    if len(item) > MAX_ENVELOPE_BYTES:
        return Identity(), item
    try:
        envelope = loads(item.decode("utf-8"))
    except Exception:  # nothing readable
        return Identity(), item
    if not isinstance(envelope, dict):
        return Identity(), item
    body = _decoded_body(envelope)
    if body is None:
        return identity_of(envelope.get("headers")), item
    properties = {**envelope["properties"], "body_encoding": "base64, decoded in this record"}
    readable = {**envelope, "body": body, "properties": properties}
    return identity_of(envelope.get("headers"), body), json.dumps(readable, ensure_ascii=False)


def _decoded_body(envelope: dict[str, Any]) -> Any:
    """The envelope's base64 body decoded (as JSON where it is JSON), or None."""
    properties, body = envelope.get("properties"), envelope.get("body")
    if not (isinstance(properties, dict) and properties.get("body_encoding") == "base64"):
        return None
    if not isinstance(body, str):
        return None
    try:
        text = base64.b64decode(body.encode("utf-8"), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return text


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, checking every BRPOP reply before kombu parses it, and able to
    reach Redis after Celery closed its connection (see :meth:`_connparams`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before kombu's own set-up, which may already send commands through conn_or_acquire.
        self._commands: tuple[Any, Any] | None = None
        super().__init__(*args, **kwargs)
        self._connection_info = self.connection.client

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The client for one command or pipeline: kombu builds a new redis-py client for
        every one (every send's binding lookup and push, every ack), and building one fills a
        table of about 200 reply callbacks: an eighth of a dispatcher's CPU and of a worker's
        main process. This channel keeps one per connection pool (a client is only the pool
        and that table; a new pool, after a fork or a lost connection, gets a new client)."""
        if client is not None:
            yield client
            return
        pool = self.pool
        commands = self._commands
        if commands is None or commands[0] is not pool:
            commands = self._commands = (pool, self._create_client())  # type: ignore[attr-defined]
        yield commands[1]

    def _connparams(self, asynchronous: bool = False) -> Any:
        # On a lost broker connection Celery (5.7) closes the kombu Connection, which clears
        # the transport's ``client``, and only then closes this channel; kombu needs the
        # connection's parameters to give the channel's unacked messages back (or to ack a task
        # that finishes afterwards) and raises AttributeError: the worker dies ("Unrecoverable
        # error") on every Redis restart with a task in flight. Lend it the parameters the
        # channel was opened with.
        transport = self.connection
        if transport.client is not None:
            return super()._connparams(asynchronous)  # type: ignore[misc]
        transport.client = self._connection_info
        try:
            return super()._connparams(asynchronous)  # type: ignore[misc]
        finally:
            transport.client = None

    @cached_property
    def client(self) -> Any:
        """kombu's consuming client, with the BRPOP reply guarded."""
        client = self._create_client(asynchronous=True)  # type: ignore[attr-defined]
        client.set_response_callback("BRPOP", self._guarded_brpop_reply)
        return client

    def _guarded_brpop_reply(self, reply: Any, **_: Any) -> tuple[bytes, bytes] | None:
        if not reply:
            return None
        key, item = reply
        if not self._refused(item, key):
            return key, item
        return None  # kombu reads an empty poll; the item was popped: acked

    def _handle_message(self, client: Any, reply: Any) -> Any:
        # A fanout message (Celery's control channel, "celery.pidbox") arrives by pub/sub and
        # is parsed just as a queue item is: a bad one is dropped here the same way.
        payload = super()._handle_message(client, reply)  # type: ignore[misc]
        kind = payload.get("type") if isinstance(payload, dict) else None
        if (
            isinstance(kind, bytes | str)
            and (kind.decode() if isinstance(kind, bytes) else kind).endswith("message")
            and isinstance(payload.get("data"), bytes)
            and self._refused(payload["data"], payload.get("channel") or "")
        ):
            payload["data"] = None  # kombu skips a message without data
        return payload

    def _refused(self, item: bytes, key: bytes | str) -> bool:
        """Whether ``item`` is refused (and then recorded as a dead letter)."""
        try:
            check_envelope(item)
        except EnvelopeRefused as refused:
            try:
                identity, raw = refused_item(item)
            except Exception:  # what the letter reveals is a courtesy: keep the item as it came
                identity, raw = Identity(), item
            record_dead_letter(
                str(refused),
                identity,
                raw=raw,
                queue=self._queue_of(key),
                source="transport",
            )
            return True
        return False

    def _queue_of(self, key: bytes | str) -> str:
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        return str(name.removeprefix(self.global_keyprefix).rsplit(self.sep, 1)[0])


#: The most unacked deliveries :func:`restore_held` reads (a worker holds one per process and
#: a few reserved; thousands mean something else is wrong, and kombu's own restore applies).
_HELD_SCAN = 10_000


def restore_held(connection: Any, runs: dict[str, float]) -> int:
    """Put the messages that dead runs held back on their queues, now: ``runs`` maps each run's
    task id to when it started (unix time).

    With late acks, a message a worker took stays in Redis's ``unacked`` hash until that
    worker acks it, or, if the worker is dead, until kombu restores it after the visibility
    timeout (an hour by default). A worker that proved a run's process gone (its orphaned
    attempt names the message's task id and its start) restores that message at once, to be
    served next, so the posts of a ``publish_many`` run that had not started are run again
    (each claim is conditional: a post already claimed is skipped).

    Only a delivery made before the run started is the dead run's: the same message delivered
    again since (a living worker requeued it after its pool process died, and another took it,
    under the same delivery tag) is in a living worker's hands and is left alone. Not Redis:
    nothing to do (RabbitMQ gives a dead consumer's messages back at once). Returns how many
    were put back."""
    channel = connection.default_channel
    if not runs or not isinstance(channel, kombu_redis.Channel):
        return 0
    client, qos = channel.client, cast(kombu_redis.QoS, channel.qos)
    restored = 0
    held = client.zrange(channel.unacked_index_key, 0, _HELD_SCAN - 1, withscores=True)
    for tag, delivered_at in held:
        raw = client.hget(channel.unacked_key, tag)
        try:
            task_id = loads(raw.decode("utf-8"))[0]["headers"]["id"]
            started = runs.get(task_id) if isinstance(task_id, str) else None
        except Exception:  # noqa: S112 - gone meanwhile, or not a Celery message: not ours
            continue
        if started is not None and delivered_at < started:
            qos.restore_by_tag(tag, client=client)  # rightmost: BRPOP serves it next
            restored += 1
    return restored


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the guarded :class:`Channel`."""

    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Redis Sentinel channel, guarded the same way."""


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Redis Sentinel transport with the guarded :class:`SentinelChannel`."""

    Channel = SentinelChannel
