"""A test task whose run kills the pool process running it, as a message that blows up memory
or crashes native code would; loaded into worker subprocesses with ``include``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from herald.celery_app import app
from herald.tasks.base import HeraldTask

KILL_OWN_PROCESS = "tests.kill_own_process"


@app.task(bind=True, base=HeraldTask, name=KILL_OWN_PROCESS)
def kill_own_process(self: HeraldTask, runs: str) -> None:
    """Append this run's process id to the file ``runs``, then die as the OOM killer kills."""
    with Path(runs).open("a") as out:
        out.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
