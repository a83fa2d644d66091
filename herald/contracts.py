"""Public task payloads: the JSON other services send. A contract — change it compatibly.

Every model forbids unknown fields: a misspelt field is an error the sender hears about, not
data silently lost. New optional fields get defaults so old senders keep working.

What a payload carries must be storable as it is, so that neither the API nor a task meets
bad input as a database error: text holds no NUL (U+0000, which Postgres text and JSONB
refuse) and no unpaired surrogate (which UTF-8 cannot encode); ``provider_settings`` is plain
JSON of bounded depth and size with finite numbers; an instant is an RFC 3339 date-time with a
zone that stays inside the calendar in UTC (a number is not a date). Each refusal names the
field and never echoes the input. The field types carry the same constraints into the
OpenAPI document, so what the schema allows the server accepts.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

# -- text Postgres can store -------------------------------------------------------------------

# The schema names NUL only: an unpaired surrogate cannot be written in a JSON Schema pattern
# that every engine compiles (Rust's regex refuses surrogates), and JSON text carries one only
# as a deliberate \uDXXX escape; it is refused all the same.
STORABLE_TEXT_PATTERN = r"^[^\u0000]*$"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_MESSAGE = "must not contain NUL (U+0000) or unpaired surrogate characters"


def has_unstorable_text(text: str) -> bool:
    """Whether ``text`` holds a character Postgres text or JSONB cannot store."""
    return _UNSTORABLE.search(text) is not None


def scrub_unstorable(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` that Postgres text and JSONB can store: unstorable characters
    become U+FFFD (in keys too), non-finite numbers their name, and anything nested deeper
    than 64 levels a marker. For keeping what was *refused* (dead letters) or what a network
    already did (the id of a published post), never for accepting input."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict | list | tuple) and _depth >= 64:
        return "(nested too deep to keep)"
    if isinstance(value, dict):
        return {scrub_unstorable(str(k)): scrub_unstorable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_unstorable(item, _depth + 1) for item in value]
    return value


def storable_text(value: str) -> str:
    """``value``, or a validation error when Postgres could not store it (NUL, a lone
    surrogate); for a field that needs its own constraints beside :data:`StorableText`'s."""
    if has_unstorable_text(value):
        raise PydanticCustomError("text_unstorable", _UNSTORABLE_MESSAGE)
    return value


StorableText = Annotated[
    str, AfterValidator(storable_text), Field(json_schema_extra={"pattern": STORABLE_TEXT_PATTERN})
]

# What ``str.strip()`` removes (Python's whitespace), written out for the schema's pattern; the
# last of it is U+3000, so the scan at import stops there.
_SPACE_CLASS = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
#: Storable text with something besides whitespace: the schema's words for :func:`trimmed_text`.
TRIMMED_TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{_SPACE_CLASS}][^\u0000]*$"


def trimmed_text(value: str) -> str:
    """``value`` without its surrounding whitespace; a validation error when it is only
    whitespace or Postgres could not store it. The length limits apply to the text as sent, so
    the schema (:data:`TRIMMED_TEXT_PATTERN`) says exactly what is accepted."""
    stripped = storable_text(value).strip()
    if not stripped:
        raise PydanticCustomError("string_blank", "must hold more than whitespace")
    return stripped


#: Text stored without its surrounding whitespace (:func:`trimmed_text`); give it a
#: ``max_length`` where it is used: ``Annotated[TrimmedText, Field(max_length=200)]``.
TrimmedText = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": TRIMMED_TEXT_PATTERN}),
    AfterValidator(trimmed_text),
]

# -- counts ----------------------------------------------------------------------------------------


def _json_number(value: object) -> object:
    # pydantic would take ``true`` as 1 and "3" as 3; JSON Schema's integer is a number with
    # no fraction (3.0 included, which pydantic takes), never a boolean or a string.
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "must be a JSON integer")
    return value


# -- instants ------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_text(value: object) -> object:
    # pydantic would also take a number (or a numeric string) as seconds since the epoch,
    # a date alone, or a time without seconds: none of those is what the schema promises.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError(
        "datetime_format",
        "must be an RFC 3339 date-time with a zone, such as 2030-01-01T09:00:00Z",
    )


def in_utc(value: datetime) -> datetime:
    """``value`` in UTC, or a validation error when that falls outside years 1-9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "is out of range: it must fall in years 0001-9999 in UTC"
        ) from None


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(in_utc),
    Field(description="An RFC 3339 date-time with a zone, in years 0001-9999 once in UTC."),
]

# -- provider settings: plain JSON, bounded ------------------------------------------------------

SETTINGS_MAX_BYTES = 16_384
SETTINGS_MAX_DEPTH = 16
_MAX_FLOAT = 1.7976931348623157e308


def _names_are_storable(schema: dict[str, Any]) -> None:
    """pydantic writes a constrained key type as ``patternProperties``, which leaves every
    other key allowed; the server refuses them, so say so with ``propertyNames``."""
    pattern_properties = schema.pop("patternProperties", None)
    if pattern_properties:
        [(pattern, value_schema)] = pattern_properties.items()
        schema["propertyNames"] = {"pattern": pattern}
        schema["additionalProperties"] = value_schema


_JsonNumber = Annotated[
    float, Field(json_schema_extra={"minimum": -_MAX_FLOAT, "maximum": _MAX_FLOAT})
]
# The shape the OpenAPI document gives a setting's value; :func:`_valid_settings` enforces it.
SettingValue = TypeAliasType(
    "SettingValue",
    "Union[bool, int, _JsonNumber, StorableText, list[SettingValue],"
    " Annotated[dict[StorableText, SettingValue], Field(json_schema_extra=_names_are_storable)],"
    " None]",
)


def _settings_problems(value: Any, depth: int = 1) -> Iterator[str]:
    """Everything that makes ``value`` unfit for storing as provider settings, lazily."""
    if depth > SETTINGS_MAX_DEPTH:
        yield f"must not be nested more than {SETTINGS_MAX_DEPTH} levels deep"
    elif isinstance(value, float) and not math.isfinite(value):
        yield "numbers must be finite"
    elif isinstance(value, str) and has_unstorable_text(value):
        yield f"text {_UNSTORABLE_MESSAGE}"
    elif isinstance(value, list):
        for item in value:
            yield from _settings_problems(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or has_unstorable_text(key):
                yield f"names must be text and {_UNSTORABLE_MESSAGE}"
            yield from _settings_problems(item, depth + 1)
    elif not (value is None or isinstance(value, bool | int | float | str)):
        yield "values must be JSON: null, booleans, numbers, text, arrays or objects"


def _valid_settings(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PydanticCustomError("dict_type", "must be a JSON object")
    problem = next(_settings_problems(value), None)
    if problem is not None:
        raise PydanticCustomError("provider_settings_invalid", problem)
    if len(json.dumps(value, ensure_ascii=False).encode()) > SETTINGS_MAX_BYTES:
        raise PydanticCustomError(
            "provider_settings_too_large", f"must be under {SETTINGS_MAX_BYTES} bytes as JSON"
        )
    return value


ProviderSettings = Annotated[
    dict[str, Any],
    PlainValidator(
        _valid_settings,
        json_schema_input_type=Annotated[
            dict[StorableText, SettingValue], Field(json_schema_extra=_names_are_storable)
        ],
    ),
    Field(
        description=(
            "Network-specific options as plain JSON: at most "
            f"{SETTINGS_MAX_DEPTH} levels deep and {SETTINGS_MAX_BYTES} bytes."
        )
    ),
]

# -- the payloads --------------------------------------------------------------------------------

_KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,200}$"
_KEY = re.compile(_KEY_PATTERN)


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class MediaIn(Contract):
    url: Annotated[HttpUrl, Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"})]
    kind: Literal["image", "gif", "video"] = "image"
    size_bytes: (
        Annotated[int, Field(ge=0, le=5 * 1024**3), BeforeValidator(_json_number)] | None
    ) = None
    alt_text: StorableText | None = Field(default=None, max_length=5000)


class PostRequest(Contract):
    """A post to schedule, as a workspace's caller sends it (the body of ``POST
    /api/postiz/posts``); :class:`SchedulePost` adds the workspace for the task."""

    integration_id: uuid.UUID
    content: StorableText = Field(max_length=100_000)
    media: list[MediaIn] = Field(default_factory=list, max_length=20)
    provider_settings: ProviderSettings = Field(default_factory=dict)
    scheduled_at: Instant
    idempotency_key: str = Field(
        min_length=1,
        max_length=200,
        json_schema_extra={"pattern": _KEY_PATTERN},
        description="The same key in the same workspace always means the same post.",
    )

    @field_validator("idempotency_key")
    @classmethod
    def _key_shape(cls, value: str) -> str:
        if not _KEY.fullmatch(value):
            raise ValueError("must be 1-200 characters of letters, digits and ._:@/+=-")
        return value


class SchedulePost(PostRequest):
    """``herald.posts.schedule``: store a post to publish at ``scheduled_at``.

    The same ``idempotency_key`` in the same workspace always means the same post: sending it
    again (a retry by the caller) creates nothing new.
    """

    workspace_id: uuid.UUID


class PostChanges(Contract):
    """What an edit of a post that is not publishing yet may change (the body of ``PATCH
    /api/postiz/posts/{id}``): any of these, at least one; a field left out or null stays as it
    is. Each field is validated as when scheduling."""

    content: StorableText | None = Field(default=None, max_length=100_000)
    media: list[MediaIn] | None = Field(default=None, max_length=20)
    provider_settings: ProviderSettings | None = None
    scheduled_at: Instant | None = None

    def changed(self) -> dict[str, Any]:
        """The fields this edit sets (a field left out or null keeps its value)."""
        names = ("content", "media", "provider_settings", "scheduled_at")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class ReschedulePost(PostChanges):
    """``herald.posts.reschedule``: edit or move a post that is not publishing yet, as ``PATCH
    /api/postiz/posts/{id}`` does. ``expected_version`` (the post's ``version``, its ETag) makes
    the edit conditional; without it the edit applies to whatever version is stored."""

    workspace_id: uuid.UUID
    post_id: uuid.UUID
    expected_version: Annotated[int, Field(ge=1), BeforeValidator(_json_number)] | None = None


class CancelPost(Contract):
    """``herald.posts.cancel``: cancel a post that is not publishing yet (as ``DELETE
    /api/postiz/posts/{id}``). Cancelling a cancelled post changes nothing."""

    workspace_id: uuid.UUID
    post_id: uuid.UUID


class PublishPost(Contract):
    """``herald.posts.publish``: publish one post now (sent by the dispatcher)."""

    post_id: uuid.UUID


#: The most posts one ``herald.posts.publish_many`` message may carry.
PUBLISH_MANY_MAX = 50


class PostToPublish(Contract):
    """One post of :class:`PublishPosts`, with the correlation, workspace and W3C trace
    context it was scheduled under (what a ``publish`` message carries in its headers)."""

    post_id: uuid.UUID
    workspace_id: uuid.UUID | None = None
    correlation_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    traceparent: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )
    tracestate: str | None = Field(default=None, max_length=512, pattern=STORABLE_TEXT_PATTERN)


class PublishPosts(Contract):
    """``herald.posts.publish_many``: publish several posts due now, one after the other
    (sent by the dispatcher when many are due at once; docs/decisions.md, decision 42). Each
    is claimed, sent and recorded exactly as ``herald.posts.publish`` would."""

    posts: list[PostToPublish] = Field(min_length=1, max_length=PUBLISH_MANY_MAX)

    @model_validator(mode="after")
    def _each_post_once(self) -> PublishPosts:
        if len({post.post_id for post in self.posts}) != len(self.posts):
            raise PydanticCustomError("duplicate_post", "each post may appear once")
        return self


class PublishedAnswer(Contract):
    """The network created the post."""

    external_id: str = Field(min_length=1, max_length=500)
    url: str | None = Field(default=None, max_length=2000)
    request_id: str | None = Field(default=None, max_length=200)


class RefusedAnswer(Contract):
    """The network (or Herald before the call) said no, or left the outcome open: the error,
    as the taxonomy names it (``code``) with its details."""

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    http_status: int | None = None
    request_id: str | None = Field(default=None, max_length=200)
    provider_code: str | None = Field(default=None, max_length=200)
    reset_at: AwareDatetime | None = None
    rule: str | None = Field(default=None, max_length=200)


class NetworkAnswer(Contract):
    """What the network answered to one publish attempt (exactly one of ``published`` and
    ``refused``), kept so that it can be recorded after the database comes back."""

    post_id: uuid.UUID
    attempt_id: uuid.UUID
    #: The ``herald.posts.publish`` task that made the call: only its own answer is recorded.
    task_id: str | None = Field(default=None, max_length=200)
    finished_at: AwareDatetime
    latency_ms: int = Field(ge=0)
    published: PublishedAnswer | None = None
    refused: RefusedAnswer | None = None

    @model_validator(mode="after")
    def _one_answer(self) -> NetworkAnswer:
        if (self.published is None) == (self.refused is None):
            raise ValueError("exactly one of 'published' and 'refused'")
        return self


class RecordOutcome(Contract):
    """``herald.posts.record_outcome``: internal to Herald. Sent by ``publish`` when the
    network answered but the database would not take the outcome; records that answer (never
    publishes). Not for other services."""

    answer: NetworkAnswer


class ReconcileLost(Contract):
    """``herald.posts.reconcile_lost``: internal to Herald. Sent by the worker that saw the
    pool process publishing a post die; settles the post if that process's attempt is still
    open (:func:`herald.publishing.sweep.resolve_lost_process`). Not for other services."""

    post_id: uuid.UUID
    process: str = Field(min_length=1, max_length=200, pattern=STORABLE_TEXT_PATTERN)


class SealedTokens(Contract):
    """An integration's new tokens as their columns hold them: sealed under the key ring
    (bound to the integration), never the tokens themselves."""

    access_token_ciphertext: str = Field(min_length=1, max_length=20_000)
    refresh_token_ciphertext: str | None = Field(default=None, max_length=20_000)
    token_key_id: str = Field(min_length=1, max_length=64)
    token_expires_at: AwareDatetime | None = None
    refresh_expires_at: AwareDatetime | None = None
    scopes: list[str] | None = Field(default=None, max_length=200)
    token_version: int = Field(ge=1)
    last_refreshed_at: AwareDatetime


class StoreRefreshedTokens(Contract):
    """``herald.tokens.store_refreshed``: internal to Herald. Sent by ``herald.tokens.refresh``
    when the network rotated an integration's tokens but the database would not take them:
    stores them (sealed; written only over the token version the refresh read) when it is back.
    Never calls the network. Not for other services."""

    integration_id: uuid.UUID
    read_version: int = Field(ge=0)
    attempt_id: uuid.UUID
    lease_owner: str = Field(min_length=1, max_length=200)
    then_publish: uuid.UUID | None = None
    latency_ms: int = Field(ge=0)
    tokens: SealedTokens


class RefreshIntegration(Contract):
    """``herald.tokens.refresh``: refresh one integration's tokens, single-flight.

    ``seen_token_version`` is the token version the sender saw (the tokens a network refused):
    when the integration has moved past it, another refresh won and this one uses its tokens
    instead of rotating again. Without it the tokens are refreshed whatever their version.
    ``then_publish`` names a post to make due once the refresh is decided (the posts waiting
    for the token are made due anyway); the dispatcher publishes it, never the refresh.
    """

    integration_id: uuid.UUID
    then_publish: uuid.UUID | None = None
    seen_token_version: int | None = Field(default=None, ge=0)


class NoArguments(Contract):
    """Periodic jobs take no arguments."""
