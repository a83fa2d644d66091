"""`make demo` stays true: the demo runs on embedded defaults and every post ends as its
scenario says. Run as a subprocess with none of the test run's HERALD_* settings, as a
newcomer would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_on_embedded_defaults_and_every_post_ends_as_expected(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    result = subprocess.run(
        [sys.executable, "-m", "herald.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "every post ended as the scenario expects" in output
    assert "refused at scheduling: content_invalid" in output
    assert (tmp_path / "herald-demo.sqlite3").exists()
    for story in ("needs_review", "failed", "published"):
        assert story in output
    # The revoked connection: cut once, alert raised, webhook delivered, audited.
    assert "needs_reauth: acme-bluesky-revoked" in output
    assert "alert firing: Connections need reconnecting" in output
    assert "webhooks delivered: integration.needs_reauth" in output
    assert "audit events token.refresh.failed: 1" in output
