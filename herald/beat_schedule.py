"""Every periodic job Celery beat runs, in one place.

Each entry names a public task (see the README's task table) and its cadence. Beat only
enqueues; the tasks themselves are idempotent, so a tick that runs twice (two beats by mistake,
a redelivery) does no harm.
"""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {}
