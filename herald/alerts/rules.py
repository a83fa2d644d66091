"""What a rule is: a validated definition, and the comparison it makes.

:class:`RuleSpec` is the one shape every rule comes in — from the API, the CLI, the defaults —
checked against the figure catalogue and the configured receivers before it is stored.
Anything wrong is a :class:`RuleInvalid` naming each field and what is wrong with it.
"""

from __future__ import annotations

import math
import operator
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from herald.models import AlertRule, Severity, StateBehaviour
from herald.settings import Settings
from herald.telemetry.figures import CATALOGUE, FigureError, Query, Window, check_query

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
RESERVED_LABELS = frozenset({"rule", "severity", "workspace_id"})
# What the OpenAPI document lists (JSON values, for pydantic's schema extras).
_FIGURE_NAMES: list[JsonValue] = [*sorted(CATALOGUE)]
_RESERVED_NAMES: list[JsonValue] = [*sorted(RESERVED_LABELS)]
MAX_WINDOW_S = 31 * 86_400
MAX_DURATION_S = 7 * 86_400
# Any fixed aware instant: checking a query needs a window, not a particular one.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class RuleInvalid(ValueError):
    """A rule definition that cannot be stored; ``problems`` lists each field's error."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


def _labels(value: Mapping[str, str]) -> Mapping[str, str]:
    for name, label in value.items():
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(f"label name {name!r} must match {LABEL_NAME.pattern}")
        if len(label) > 500:
            raise ValueError(f"label {name} is longer than 500 characters")
    return value


class RuleSpec(BaseModel):
    """A rule as people write it. Durations are in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    metric: str = Field(
        description="A figure of the catalogue (GET …/monitoring/figures)",
        json_schema_extra={"enum": _FIGURE_NAMES},
    )
    window_s: int = Field(default=3600, ge=10, le=MAX_WINDOW_S)
    comparison: Comparison
    threshold: float
    min_samples: int = Field(default=0, ge=0, le=1_000_000)
    for_s: int = Field(default=0, ge=0, le=MAX_DURATION_S)
    keep_firing_for_s: int = Field(default=0, ge=0, le=MAX_DURATION_S)
    severity: Severity
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        json_schema_extra={
            "propertyNames": {
                "pattern": LABEL_NAME.pattern,
                "not": {"enum": _RESERVED_NAMES},
            },
            "additionalProperties": {"type": "string", "maxLength": 500},
        },
    )
    group_by: list[str] = Field(default_factory=list, max_length=5)
    filters: dict[str, str] = Field(default_factory=dict, max_length=5)
    no_data_state: StateBehaviour = StateBehaviour.OK
    error_state: StateBehaviour = StateBehaviour.STATE
    inhibits: list[str] = Field(default_factory=list, max_length=20)
    runbook: str = Field(default="", max_length=2000)
    receivers: list[str] = Field(default_factory=list, max_length=10)
    enabled: bool = True

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("the threshold must be a finite number")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        _labels(value)
        reserved = RESERVED_LABELS & set(value)
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))} are set by Herald itself")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in CATALOGUE:
            raise ValueError(f"unknown figure {value!r}; known: {', '.join(sorted(CATALOGUE))}")
        return value

    def row_values(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def of(cls, rule: AlertRule) -> RuleSpec:
        return cls.model_validate({name: getattr(rule, name) for name in cls.model_fields})


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(rule)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def validate(
    data: Mapping[str, Any], settings: Settings, *, workspace_id: uuid.UUID | None
) -> RuleSpec:
    """A :class:`RuleSpec` from ``data``, or :class:`RuleInvalid` with every problem found."""
    try:
        spec = RuleSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise RuleInvalid(_problems(exc)) from None
    problems = check(spec, settings, workspace_id=workspace_id)
    if problems:
        raise RuleInvalid(problems)
    return spec


def check(
    spec: RuleSpec, settings: Settings, *, workspace_id: uuid.UUID | None
) -> list[dict[str, str]]:
    """What the catalogue and the settings say against ``spec`` (empty when it is fine)."""
    problems: list[dict[str, str]] = []
    figure = CATALOGUE[spec.metric]
    window = Window.last(spec.window_s, _EPOCH)
    for field, query in (
        ("metric", Query(window, workspace_id)),
        ("group_by", Query(window, group_by=tuple(spec.group_by))),
        ("filters", Query(window, filters=spec.filters)),
    ):
        try:
            check_query(figure, query)
        except FigureError as exc:
            problems.append({"field": field, "message": str(exc)})
    for name in spec.receivers:
        receiver = settings.alert_receivers.get(name)
        if receiver is None:
            known = ", ".join(sorted(settings.alert_receivers)) or "none configured"
            problems.append(
                {"field": "receivers", "message": f"unknown receiver {name!r} ({known})"}
            )
        elif workspace_id is not None and not receiver.workspaces:
            problems.append(
                {
                    "field": "receivers",
                    "message": f"receiver {name!r} is not open to workspace rules",
                }
            )
    return problems


def receivers_of(rule: AlertRule, settings: Settings) -> list[str]:
    """Where a rule's notifications go: its own receivers, else the default ones."""
    return list(rule.receivers) or list(settings.alert_default_receivers)
