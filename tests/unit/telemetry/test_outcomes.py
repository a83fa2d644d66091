"""The outcome label's values are known in advance: every one the publish path records is in
``PUBLISH_OUTCOMES``, the list a worker creates at 0 when it starts."""

from __future__ import annotations

import ast
from pathlib import Path

import herald.publishing
from herald.telemetry.figures import PUBLISH_OUTCOMES


def _recorded_outcomes() -> set[str]:
    """Every string the publish path assigns to an attempt's outcome, or passes as one."""
    found: set[str] = set()
    for path in Path(herald.publishing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == "outcome" for t in node.targets
            ):
                value: ast.expr = node.value
            elif isinstance(node, ast.keyword) and node.arg == "outcome":
                value = node.value
            else:
                continue
            found.update(
                leaf.value
                for leaf in ast.walk(value)
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str)
            )
    return found


def test_every_outcome_the_publish_path_records_is_listed() -> None:
    recorded = _recorded_outcomes()
    assert {"published", "needs_review"} <= recorded  # the scan finds them
    assert recorded <= set(PUBLISH_OUTCOMES)
    assert len(set(PUBLISH_OUTCOMES)) == len(PUBLISH_OUTCOMES)
