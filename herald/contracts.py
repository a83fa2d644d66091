"""Public task payloads: the JSON other services send. A contract — change it compatibly.

Every model forbids unknown fields: a misspelt field is an error the sender hears about, not
data silently lost. New optional fields get defaults so old senders keep working.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

_KEY = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
_MAX_SETTINGS_BYTES = 16_384


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class MediaIn(Contract):
    url: HttpUrl
    kind: Literal["image", "gif", "video"] = "image"
    size_bytes: int | None = Field(default=None, ge=0, le=5 * 1024**3)
    alt_text: str | None = Field(default=None, max_length=5000)


class SchedulePost(Contract):
    """``herald.posts.schedule``: store a post to publish at ``scheduled_at``.

    The same ``idempotency_key`` in the same workspace always means the same post: sending it
    again (a retry by the caller) creates nothing new.
    """

    workspace_id: uuid.UUID
    integration_id: uuid.UUID
    content: str = Field(max_length=100_000)
    media: list[MediaIn] = Field(default_factory=list, max_length=20)
    provider_settings: dict[str, Any] = Field(default_factory=dict)
    scheduled_at: AwareDatetime
    idempotency_key: str

    @field_validator("idempotency_key")
    @classmethod
    def _key_shape(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("must be 1-200 characters of letters, digits and ._:@/+=-")
        return value

    @field_validator("provider_settings")
    @classmethod
    def _settings_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(repr(value)) > _MAX_SETTINGS_BYTES:
            raise ValueError(f"must be under {_MAX_SETTINGS_BYTES} bytes")
        return value


class PublishPost(Contract):
    """``herald.posts.publish``: publish one post now (sent by the dispatcher)."""

    post_id: uuid.UUID


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
