"""``herald worker`` on the in-process default broker says, loudly, that nothing will come."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fixtures.polling import eventually


def test_a_worker_on_the_memory_broker_warns_it_will_never_receive_anything(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "HERALD_BROKER_URL": "memory://localhost/",
        "HERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'herald.sqlite3'}",
    }
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "worker", "--pool", "solo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        try:

            def said() -> str:
                stderr.seek(0)
                return stderr.read().decode(errors="replace")

            eventually(lambda: "never receive" in said() or proc.poll() is not None, 30, "it")
            assert "WARNING" in said()
            assert "HERALD_BROKER_URL" in said()
            assert "never receive a task sent by another process" in said()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
