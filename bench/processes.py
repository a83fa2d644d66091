"""Subprocesses for the benchmark: Celery workers and the sandbox, and their memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


class Process:
    def __init__(self, argv: list[str], name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self._log: IO[bytes] = (workdir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @classmethod
    def command(cls, argv: list[str], name: str, env: dict[str, str], workdir: Path) -> Process:
        return cls(argv, name, env, workdir)

    @classmethod
    def celery(
        cls, app: str, name: str, queues: str, concurrency: int, env: dict[str, str], workdir: Path
    ) -> Process:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ]
        return cls(argv, name, env, workdir)

    def wait_ready(self, app: Any, timeout_s: float = 60) -> Process:
        """Block until this worker answers a control ping (so start-up is not timed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see its log")
            replies = app.control.ping(timeout=0.5) or []
            if any(next(iter(reply)).startswith(self.name + "@") for reply in replies):
                return self
        raise TimeoutError(f"{self.name} did not become ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total_kb = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024
