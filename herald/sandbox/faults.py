"""Fault injection and per-token rate limits for the sandbox.

A :class:`FaultSpec` says what goes wrong (``kind``), where (network, and optionally account,
method and a path substring) and how often (the next ``times`` matching calls, or a
``probability`` rolled with a seeded RNG so a run is reproducible). ``applied=True`` lets the
request take effect first (the post is created) and then answers with the fault: the
ambiguous outcome a publisher has to reconcile.

Kinds:

``latency``      sleep ``ms`` then answer normally (several latency rules add up)
``error``        answer ``status`` with the network's own error body (``message``/``code``);
                 with ``echo`` the message quotes the request back (its URL with the query,
                 its ``Authorization`` header and body), as some networks' errors do
``rate_limit``   answer 429 with the network's own headers and body
``timeout``      sleep ``ms`` (past the client's timeout), then answer 504
``drop``         close the connection without answering
``garble``       answer ``status`` (a 2xx by default) with ``body`` verbatim instead of the
                 network's answer: empty, not JSON, or JSON of the wrong shape; ``repeat``
                 sends it that many times over, and ``ms`` (with ``repeat``) one at a time,
                 ``ms`` apart: an answer that trickles in
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, model_validator

FaultKind = Literal["latency", "error", "rate_limit", "timeout", "drop", "garble"]


class FaultSpec(BaseModel):
    """One fault rule, as posted to ``POST /_sandbox/faults``."""

    kind: FaultKind
    network: str
    account_id: str | None = None
    method: str | None = None
    path: str | None = Field(default=None, description="substring of the path under /<network>")
    status: int | None = Field(default=None, ge=200, le=599, description="default 500; garble 200")
    message: str | None = None
    body: str = Field(default="", max_length=100_000, description="garble: the body sent")
    repeat: int = Field(
        default=1, ge=1, le=100_000, description="garble: the body sent this many times over"
    )
    code: str | None = None
    ms: int = Field(default=0, ge=0, le=600_000)
    applied: bool = False
    echo: bool = Field(default=False, description="quote the request back in the message")
    times: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _coherent(self) -> FaultSpec:
        if self.kind in ("latency", "rate_limit") and self.applied:
            raise ValueError(f"a {self.kind} fault cannot be 'applied'")
        if self.echo and (self.kind != "error" or self.applied):
            raise ValueError("only an 'error' fault that is not 'applied' can echo the request")
        if self.kind == "timeout" and self.ms == 0:
            self.ms = 30_000
        if self.status is None:
            self.status = 200 if self.kind == "garble" else 500
        if self.repeat > 1 and self.kind != "garble":
            raise ValueError("only a 'garble' fault repeats its body")
        if self.kind == "garble" and not 200 <= self.status < 300:
            raise ValueError("a garble fault answers a 2xx status")
        if self.kind != "garble" and self.status < 400:
            raise ValueError(f"a {self.kind} fault answers a 4xx or 5xx status")
        return self


@dataclass
class FaultRule:
    id: str
    spec: FaultSpec
    rng: random.Random
    remaining: int | None
    fired: int = 0

    def matches(self, network: str, account_id: str | None, method: str, path: str) -> bool:
        s = self.spec
        return (
            s.network == network
            and (s.account_id is None or s.account_id == account_id)
            and (s.method is None or s.method.upper() == method)
            and (s.path is None or s.path in path)
        )

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            **self.spec.model_dump(),
            "remaining": self.remaining,
            "fired": self.fired,
        }


@dataclass(frozen=True)
class FaultPlan:
    """What the dispatcher does to one request: sleep first, then maybe one fault."""

    latency_ms: int = 0
    fault: FaultSpec | None = None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._seq = 0

    def add(self, spec: FaultSpec) -> FaultRule:
        with self._lock:
            self._seq += 1
            rule = FaultRule(
                id=f"f{self._seq}",
                spec=spec,
                rng=random.Random(spec.seed if spec.seed is not None else self._seq),  # noqa: S311
                remaining=spec.times,
            )
            self._rules.append(rule)
            return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def plan(self, network: str, account_id: str | None, method: str, path: str) -> FaultPlan:
        """Roll every matching rule once; consume the ones that fire."""
        latency = 0
        chosen: FaultSpec | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(network, account_id, method, path):
                    continue
                if rule.spec.kind != "latency" and chosen is not None:
                    continue
                if rule.spec.probability < 1.0 and rule.rng.random() >= rule.spec.probability:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                if rule.spec.kind == "latency":
                    latency += rule.spec.ms
                else:
                    chosen = rule.spec
            self._rules = [r for r in self._rules if r.remaining is None or r.remaining > 0]
        return FaultPlan(latency_ms=latency, fault=chosen)


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


class RateLimit(BaseModel):
    """``limit`` requests per ``window_s`` per access token. ``midnight_utc`` aligns the
    window's end to the next midnight UTC (LinkedIn's daily quotas)."""

    limit: int = Field(ge=1)
    window_s: int = Field(ge=1)
    midnight_utc: bool = False


@dataclass(frozen=True)
class RateWindow:
    """The state of one token's window after counting a request."""

    limit: int
    remaining: int
    reset_at: datetime
    window_s: int
    exceeded: bool

    @property
    def reset_epoch(self) -> int:
        return int(self.reset_at.timestamp())


@dataclass
class _Counter:
    started: datetime
    reset_at: datetime
    count: int = 0


@dataclass
class RateLimiter:
    limits: dict[str, RateLimit] = field(default_factory=dict)
    _counters: dict[tuple[str, str], _Counter] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self._lock:
            self._counters.clear()

    def hit(self, network: str, token_key: str, now: datetime) -> RateWindow | None:
        """Count one request for ``token_key``; None when the network has no limit set."""
        limit = self.limits.get(network)
        if limit is None:
            return None
        with self._lock:
            counter = self._counters.get((network, token_key))
            if counter is None or now >= counter.reset_at:
                if limit.midnight_utc:
                    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
                    reset_at = day + timedelta(days=1)
                else:
                    reset_at = now + timedelta(seconds=limit.window_s)
                counter = _Counter(started=now, reset_at=reset_at)
                self._counters[(network, token_key)] = counter
            counter.count += 1
            exceeded = counter.count > limit.limit
            return RateWindow(
                limit=limit.limit,
                remaining=max(0, limit.limit - counter.count),
                reset_at=counter.reset_at,
                window_s=limit.window_s,
                exceeded=exceeded,
            )
