"""compose.yaml, read as an operator would run it: what it exposes and what it requires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services[name]


def test_flower_requires_credentials_and_is_published_on_loopback_only() -> None:
    flower = service("flower")

    assert flower["environment"]["HERALD_FLOWER_BASIC_AUTH"].startswith(
        "${HERALD_FLOWER_BASIC_AUTH:?"
    )
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["environment"]["HERALD_ENV"] == "production"  # no development fallback
