"""The fence between a publish run's claim and the network: no write leaves once the claim may
have passed to the sweep.

A post ``publishing`` for longer than ``HERALD_PUBLISHING_TIMEOUT_S`` is the sweep's: it looks
the post up at the network and, finding nothing, queues it again. A run lasts that long only if
its worker was frozen whole (``docker pause``, ``kill -STOP`` of its process group, a suspended
virtual machine): the worker's main process kills a run at its hard time limit, but a frozen
main process kills nothing. Resumed, such a run would carry on where it stopped and send the
post after the sweep had queued it again: twice on the network.

So a publish run holds a :func:`lease` from its claim, and every write to a network (any method
but GET, HEAD and OPTIONS; :mod:`.http` calls :func:`check` before each) must begin while the
lease holds: early enough that the write ends, at a call's full budget (connect and read
timeouts), before the sweep may take the post, even a sweep on a clock
:data:`~herald.settings.CLOCK_SKEW_ALLOWANCE_S` ahead. The lease is measured on two clocks, the
wall clock the claim was stamped with and the boot clock (which keeps counting while a process
is stopped or its machine suspended, and which nothing steps), and ends when either says so.

A write past the lease is not sent: :class:`ClaimExpired` is raised in its place. It is no
network's answer, so no adapter catches it (they catch :class:`~.base.ProviderError`). The
publisher records it as :class:`~.base.ClaimLapsed`, a transient refusal, when nothing of the
attempt went out, and as :class:`~.base.ClaimLapsedMidCall`, an ambiguous outcome it reconciles
before anything else, when an earlier write did (an upload, or a first request whose answer was
lost); either only under the attempt's own number, so it never moves a post the sweep or a
newer attempt holds. What is left is the moment between the check and the request's first
byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from herald.settings import CLOCK_SKEW_ALLOWANCE_S, Settings


class ClaimExpired(Exception):
    """A write to the network was about to leave after the run's lease on its post ended.
    ``after_writes``: an earlier write of the same run had gone out (whether the post exists
    is then unknown)."""

    def __init__(self, late_s: float, *, after_writes: bool) -> None:
        message = (
            f"the claim on this post lapsed {late_s:.1f} s before a request to the network, "
            "which was not sent (was the worker paused?): the sweep may hold the post now"
        )
        if after_writes:
            message += "; an earlier request of this attempt went out"
        super().__init__(message)
        self.late_s = late_s
        self.after_writes = after_writes


@dataclass(slots=True)
class _Lease:
    wall_ends: float  # time.time()
    boot_ends: float  # _boot_clock()
    writes: int = 0  # writes that passed the check (sent, or tried)


_lease: ContextVar[_Lease | None] = ContextVar("herald_claim_lease", default=None)


def _boot_clock() -> float:
    # CLOCK_BOOTTIME counts a suspended machine; CLOCK_MONOTONIC (elsewhere) a stopped process.
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime(clock)


def lease_s(settings: Settings) -> float:
    """How long after its claim a run may still begin a write to the network."""
    one_call = settings.provider_connect_timeout_s + settings.provider_timeout_s
    return settings.publishing_timeout_s - CLOCK_SKEW_ALLOWANCE_S - one_call


@contextmanager
def lease(claimed_at: datetime, settings: Settings) -> Iterator[None]:
    """Writes inside may begin until :func:`lease_s` after ``claimed_at`` (this process's
    wall clock, which stamped the claim), and no later."""
    wall_now, boot_now = time.time(), _boot_clock()
    left = lease_s(settings) - max(0.0, wall_now - claimed_at.timestamp())
    token = _lease.set(_Lease(wall_ends=wall_now + left, boot_ends=boot_now + left))
    try:
        yield
    finally:
        _lease.reset(token)


def check() -> None:
    """Raise :class:`ClaimExpired` if a lease is held and has ended; outside one, nothing."""
    held = _lease.get()
    if held is None:
        return
    late = max(time.time() - held.wall_ends, _boot_clock() - held.boot_ends)
    if late > 0:
        raise ClaimExpired(late, after_writes=held.writes > 0)
    held.writes += 1
