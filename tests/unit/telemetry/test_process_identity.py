"""How an attempt names the process that ran it, and how a worker proves that process gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from herald.telemetry.context import PID_NAMESPACE, process_gone, process_name


def exited_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_the_namespace_is_the_boot_and_the_pid_namespace_of_this_process() -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    inode = os.stat(f"/proc/{os.getpid()}/ns/pid").st_ino
    assert f"{boot}/{inode}" == PID_NAMESPACE
    assert len(PID_NAMESPACE) <= 64  # the attempt's column


def test_a_process_that_exited_is_gone_and_a_running_one_is_not() -> None:
    assert process_gone(process_name(exited_pid()))
    assert not process_gone(process_name())
    assert not process_gone(process_name(1))  # init: another user's on most machines, alive


def test_what_cannot_be_read_as_a_pid_is_never_taken_for_gone() -> None:
    # kill(0) and kill(-1) would signal process groups: such names prove nothing.
    for name in ("host:0", "host:-1", "host:", "host", "", "host:12a", "host:pid", "h:" + "9" * 30):
        assert not process_gone(name), name
