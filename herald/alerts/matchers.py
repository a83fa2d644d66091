"""Label matchers with Alertmanager's semantics, for silences.

A matcher is ``name op value`` with ``=`` (equal), ``!=`` (not equal), ``=~`` (the regular
expression matches the whole value) and ``!~`` (it does not). A label an alert does not carry
has the empty value, as in Alertmanager, so ``team=""`` matches alerts without a team. A
silence matches an alert when every one of its matchers does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from herald.alerts.rules import LABEL_NAME

Operator = Literal["=", "!=", "=~", "!~"]
# A silence's regular expression is user input run against every alert: a pathological one
# (catastrophic backtracking) gives up after this long and counts as not matching.
REGEX_TIMEOUT_S = 0.05
# The engine expands a counted repeat when it compiles (``a{99999999}`` took gigabytes before
# any timeout could apply): a count past RE2's bound (Alertmanager's engine refuses it too) is
# refused, and so are counts that multiply past MAX_EXPANSION, before anything compiles.
MAX_REPEAT = 1000
MAX_EXPANSION = 10_000
_COUNTED = re.compile(r"\{(\d+)(?:,(\d*))?\}")


@lru_cache(maxsize=512)
def _anchored(pattern: str) -> Any:
    return regex.compile(f"(?:{pattern})")


def _fullmatch(pattern: str, value: str) -> bool:
    try:
        return _anchored(pattern).fullmatch(value, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        return False


class MatcherSpec(BaseModel):
    """A matcher's shape, all a JSON Schema can say of it: whether a regular expression
    compiles is :class:`Matcher`'s check (the API answers it as ``matcher_invalid``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=100, pattern=LABEL_NAME.pattern)
    op: Operator = "="
    value: str = Field(default="", max_length=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not LABEL_NAME.fullmatch(value):
            raise ValueError(f"label name must match {LABEL_NAME.pattern}")
        return value


def repeat_error(pattern: str) -> str | None:
    """Why ``pattern``'s counted repeats are refused, or None. Conservative: every count in
    the pattern is multiplied, nested or not (a matcher's expressions are short)."""
    expansion = 1
    for found in _COUNTED.finditer(pattern):
        low, high = int(found.group(1)), found.group(2)
        if max(low, int(high) if high else 0) > MAX_REPEAT:
            return f"a counted repeat may be at most {MAX_REPEAT} (as in Alertmanager)"
        expansion *= max(low, 1)
        if expansion > MAX_EXPANSION:
            return f"counted repeats that multiply past {MAX_EXPANSION} are not accepted"
    return None


def regex_error(spec: MatcherSpec) -> str | None:
    """Why the matcher's regular expression does not compile (None: it does, or it has none)."""
    if spec.op in ("=~", "!~"):
        if (refused := repeat_error(spec.value)) is not None:
            return refused
        try:
            _anchored(spec.value)
        except regex.error as exc:
            return f"invalid regular expression: {exc}"
    return None


class Matcher(MatcherSpec):
    @model_validator(mode="after")
    def _regex(self) -> Matcher:
        if (error := regex_error(self)) is not None:
            raise ValueError(error)
        return self

    def matches(self, labels: Mapping[str, Any]) -> bool:
        actual = str(labels.get(self.name, "") or "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _fullmatch(self.value, actual)
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


@dataclass(frozen=True, slots=True)
class MatcherSet:
    matchers: tuple[Matcher, ...]

    @classmethod
    def parse(cls, raw: Iterable[Any]) -> MatcherSet:
        return cls(tuple(Matcher.model_validate(item) for item in raw))

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)


_TEXT = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def parse_text(text: str) -> Matcher:
    """``severity=warning``, ``rule=~"Token.*"``: the CLI's way of writing a matcher."""
    found = _TEXT.match(text)
    if found is None:
        raise ValueError(f"not a matcher: {text!r} (write name=value, name!=value, name=~regex)")
    name, op, value = found.groups()
    return Matcher.model_validate({"name": name, "op": op, "value": value})
