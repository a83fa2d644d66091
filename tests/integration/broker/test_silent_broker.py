"""A broker that accepts connections and then says nothing (a Redis host that hangs, a
failover that left a half-open path) fails a send within the dead-peer timeout; it used to
hold the sender for ever, and a beat process with it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kombu.exceptions import OperationalError

from herald.celery_app import create_app
from herald.settings import get_settings
from tests.fixtures.servers import silent_server

DEAD_PEER_TIMEOUT_S = 2


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_task_sent_to_a_broker_that_never_answers_fails_within_the_timeout(
    scheme: str,
) -> None:
    with silent_server() as (port, end):
        url = (
            f"redis://127.0.0.1:{port}/0"
            if scheme == "redis"
            else f"amqp://guest:guest@127.0.0.1:{port}//"
        )
        settings = get_settings().model_copy(
            update={"broker_url": url, "dead_peer_timeout_s": DEAD_PEER_TIMEOUT_S}
        )
        celery = create_app(settings, set_as_current=False)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:
            sending = pool.submit(celery.send_task, "herald.heartbeat", queue="default")
            try:
                # Celery retries a failed send three times: four waits at most, then the error.
                with pytest.raises(OperationalError):
                    sending.result(timeout=60)
            finally:
                end()  # a send still waiting gets its answer now: the connection is gone
        took = time.monotonic() - started

    assert took < 4 * DEAD_PEER_TIMEOUT_S + 8, took
