"""The baseline: a bare Celery task making the same HTTP call as Herald's publish, with no
database, no telemetry and no Herald plumbing. Run by bench.pipeline in its own worker."""

from __future__ import annotations

import os

import httpx
from celery import Celery

app = Celery(
    "bench_bare",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    set_as_current=False,
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_KEY_PREFIX", "")},
    task_default_queue="bench-bare",
)
_client = httpx.Client(timeout=15.0, headers={"User-Agent": "Herald/bench"})


@app.task(name="bench.bare.post")
def post(url: str, token: str, text: str, key: str) -> None:
    response = _client.post(
        url,
        json={"status": text, "visibility": "public"},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
    )
    response.raise_for_status()
