"""The baseline: a bare Celery task making the same HTTP call as Herald's publish, with no
database, no telemetry and no Herald plumbing. Run by bench.pipeline in its own worker, on
Redis or RabbitMQ (``BENCH_BROKER_URL``)."""

from __future__ import annotations

import os

import httpx
from celery import Celery

QUEUE = "bench-bare"


def make_app(broker_url: str, key_prefix: str = "") -> Celery:
    celery = Celery("bench_bare", broker=broker_url, set_as_current=False)
    options = {"global_keyprefix": key_prefix} if broker_url.startswith("redis") else {}
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_transport_options=options,
        task_default_queue=QUEUE,
    )
    return celery


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("BENCH_KEY_PREFIX", ""),
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
