"""Silence matchers behave as Alertmanager's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald.alerts.matchers import Matcher, MatcherSet, parse_text

LABELS = {"rule": "Token refresh failures", "severity": "warning", "provider": "x"}


@pytest.mark.parametrize(
    ("matcher", "matches"),
    [
        (Matcher(name="severity", op="=", value="warning"), True),
        (Matcher(name="severity", op="!=", value="warning"), False),
        (Matcher(name="rule", op="=~", value="Token.*"), True),
        (Matcher(name="rule", op="=~", value="Token"), False),  # anchored: the whole value
        (Matcher(name="rule", op="!~", value=".*refresh.*"), False),
        (Matcher(name="team", op="=", value=""), True),  # a missing label is empty
        (Matcher(name="team", op="!=", value=""), False),
        (Matcher(name="provider", op="=~", value="x|bluesky"), True),
    ],
)
def test_matcher_semantics(matcher: Matcher, matches: bool) -> None:
    assert matcher.matches(LABELS) is matches


def test_a_set_matches_when_every_matcher_does() -> None:
    both = MatcherSet.parse(
        [{"name": "severity", "value": "warning"}, {"name": "provider", "value": "x"}]
    )
    assert both.matches(LABELS)
    assert not MatcherSet.parse(
        [{"name": "severity", "value": "warning"}, {"name": "provider", "value": "y"}]
    ).matches(LABELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("severity=warning", ("severity", "=", "warning")),
        ('rule=~"Token.*"', ("rule", "=~", "Token.*")),
        ("provider!=x", ("provider", "!=", "x")),
        ("rule!~Queue.*", ("rule", "!~", "Queue.*")),
    ],
)
def test_cli_matchers_parse(text: str, expected: tuple[str, str, str]) -> None:
    m = parse_text(text)
    assert (m.name, m.op, m.value) == expected


@pytest.mark.parametrize("bad", ["", "=x", "no operator", "1abc=x"])
def test_malformed_cli_matchers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_text(bad)


def test_an_invalid_regex_is_refused() -> None:
    with pytest.raises(ValidationError, match="regular expression"):
        Matcher(name="rule", op="=~", value="(")


def test_a_pathological_regex_gives_up_instead_of_hanging() -> None:
    import time

    evil = Matcher(name="rule", op="=~", value="(a+)+$")
    started = time.monotonic()
    assert evil.matches({"rule": "a" * 40 + "!"}) is False
    assert time.monotonic() - started < 2
