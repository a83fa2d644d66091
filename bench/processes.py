"""Subprocesses for the benchmark: Celery workers and the sandbox, and their memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


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


def _children() -> dict[int, list[int]]:
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
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children()
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def matching(predicate: Callable[[str], bool]) -> list[int]:
    """Processes whose command line (NUL bytes as spaces) satisfies ``predicate``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if predicate(cmdline):
            found.append(int(entry.name))
    return found


def cpu_s(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far (its own threads, not reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S


class CpuMeter:
    """CPU time used by groups of processes over a phase, from the kernel's own accounting.

    Each group is a function naming its processes now (they come and go: Postgres backends,
    pool children). A background thread samples every ``interval_s`` and keeps, per process,
    the first and last figure seen; a process that appears during the phase counts from zero,
    one that exits keeps its last sample (losing at most one interval).
    """

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]], interval_s: float = 0.5):
        self._groups = groups
        self._interval_s = interval_s
        self._first: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.own_s = 0.0

    def _sample(self, initial: bool) -> None:
        for name, pids in self._groups.items():
            first = self._first.setdefault(name, {})
            last = self._last.setdefault(name, {})
            for pid in pids():
                used = cpu_s(pid)
                if used is None:
                    continue
                if pid not in first:
                    first[pid] = used if initial else 0.0
                last[pid] = used

    def __enter__(self) -> CpuMeter:
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample(initial=False)
        self.own_s = time.thread_time()  # this sampler's CPU, to leave out of its process's

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(initial=False)

    def seconds(self, *, without_self: str | None = None) -> dict[str, float]:
        """CPU seconds per group; ``without_self`` names the group of this process, from which
        the sampling thread's own CPU is taken out."""
        used = {
            name: sum(self._last[name][pid] - first for pid, first in self._first[name].items())
            for name in self._groups
        }
        if without_self:
            used[without_self] = max(0.0, used[without_self] - self.own_s)
        return used


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB (Linux /proc)."""
    total_kb = 0
    for current in tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024
