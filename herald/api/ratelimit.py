"""Per-workspace API rate limits: a fixed window of ``HERALD_API_RATE_LIMIT`` requests per
``HERALD_API_RATE_LIMIT_WINDOW_S`` for each workspace, answered ``429`` with ``Retry-After``
(the seconds until the window ends) past that.

The count lives in Redis when ``HERALD_API_RATE_LIMIT_REDIS_URL`` is set (one ``INCR`` per
request, the key expiring with its window), so every API process shares it; otherwise in this
process (one API process, the embedded default). A Redis that does not answer lets the request
through (logged): a limiter must not take the API down with it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any

import redis
import structlog
from fastapi import Request

from herald.api.deps import Caller, CurrentCaller, settings_of
from herald.api.errors import ApiError, ErrorEnvelope
from herald.settings import Settings

log = structlog.get_logger("herald.api")

RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorEnvelope,
        "description": "The workspace sent too many requests; retry after `Retry-After` seconds",
    }
}


class _Local:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, key: str, window: int, _: float) -> int:
        with self._lock:
            for stale in [k for k in self._counts if k[1] < window]:
                del self._counts[stale]
            count = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = count
            return count


class _Redis:
    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=1.0)
        self._prefix = prefix

    def hit(self, key: str, window: int, ttl: float) -> int:
        name = f"{self._prefix}ratelimit:{key}:{window}"
        pipe = self._client.pipeline()
        pipe.incr(name)
        pipe.expire(name, math.ceil(ttl) + 1)
        count, _ = pipe.execute()
        return int(count)


_stores: dict[tuple[str | None, str], _Local | _Redis] = {}


def _store(settings: Settings) -> _Local | _Redis:
    url = settings.api_rate_limit_redis_url
    key = (url, settings.broker_key_prefix)
    if key not in _stores:
        _stores[key] = _Redis(url, settings.broker_key_prefix) if url else _Local()
    return _stores[key]


def check(settings: Settings, workspace_id: uuid.UUID, *, now: float | None = None) -> None:
    """Count one request of ``workspace_id``; :class:`ApiError` 429 past the limit."""
    if settings.api_rate_limit <= 0:
        return
    now = time.time() if now is None else now
    span = settings.api_rate_limit_window_s
    window = int(now // span)
    retry_after = max(1, math.ceil((window + 1) * span - now))
    try:
        count = _store(settings).hit(str(workspace_id), window, retry_after)
    except redis.RedisError as exc:
        log.warning("api.rate_limit_unavailable", error_type=type(exc).__name__)
        return
    if count > settings.api_rate_limit:
        raise ApiError(
            429,
            "rate_limited",
            f"this workspace sent more than {settings.api_rate_limit} requests in "
            f"{span} s; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def rate_limit(caller: CurrentCaller, request: Request) -> Caller:
    check(settings_of(request), caller.workspace_id)
    return caller
