"""`make demo` stays true: the demo runs on embedded defaults, every post ends as its scenario
says, and it ends with the health summary and the alerts its faults raised, notified to the
local signed-webhook receiver it starts. Run as a subprocess with none of the test run's
HERALD_* settings, as a newcomer would run it."""

from __future__ import annotations

import os
import re
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
    assert "media attached: 8 on bluesky, discord, linkedin, mastodon, telegram, threads" in output
    assert (tmp_path / "herald-demo.sqlite3").exists()
    for story in ("needs_review", "failed", "published"):
        assert story in output

    # The monitoring ending: health, the raised alert, its signed notification, the command.
    assert re.search(r"Health: (healthy|degraded)", output), output[-3000:]
    assert "last hour:" in output
    assert re.search(r"│ Failed jobs spike\s+│ firing", output), output[-3000:]
    assert "HMAC-SHA256 signature verified on each; 0 refused" in " ".join(output.split())
    assert "firing: Failed jobs spike (error)" in output
    [command] = re.findall(r"HERALD_DATABASE_URL=\S+ herald alerts list[^\n]*", output)
    url, _, args = command.partition(" herald ")
    listed = subprocess.run(
        [sys.executable, "-m", "herald.cli", *args.split()],
        cwd=tmp_path,
        env={**env, "HERALD_DATABASE_URL": url.split("=", 1)[1], "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "Failed jobs spike" in listed.stdout
    # The revoked connection: cut once, alert raised, webhook delivered, audited.
    assert "needs_reauth: acme-bluesky-revoked" in output
    assert "alert firing: Connections need reconnecting" in output
    assert "webhooks delivered: integration.needs_reauth" in output
    assert "audit events token.refresh.failed: 1" in output
