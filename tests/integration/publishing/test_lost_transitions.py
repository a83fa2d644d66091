"""A status move on the publish path that loses its conditional UPDATE is logged and
counted, never ignored."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import update

from herald.models import Post, PostStatus
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.polling import request_arrives
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import run_publish


def counted(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    if all(point.attributes.get(k) == v for k, v in attributes.items()):
                        total += point.value  # type: ignore[union-attr]
    return total


def test_a_publish_that_loses_its_post_in_flight_logs_and_counts_the_lost_move(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    pub_settings: Settings,
    keys: KeyRing,
    telemetry: Any,
    log_lines: list[dict[str, Any]],
) -> None:
    settings = pub_settings.model_copy(update={"provider_timeout_s": 10.0})
    post = new_post(connect("mastodon"), content="moved by someone else while in flight")
    sandbox.inject("mastodon", "latency", ms=1500, method="POST")
    lost = {"from": "publishing", "to": "published", "site": "publish"}
    before = counted(telemetry[1], "herald.publish.lost_transitions", **lost)

    outcomes: list[Any] = []
    running = threading.Thread(target=lambda: outcomes.append(run_publish(post, settings, keys)))
    running.start()
    request_arrives(sandbox, "mastodon", "POST")  # answered only 1.5 s later
    # Something moving a post whose run still calls (a hand-edited row: the sweep's review is
    # settled by the network's yes, tests/integration/publishing/test_recording.py).
    with service_session() as s:
        s.execute(update(Post).where(Post.id == post.id).values(status=PostStatus.FAILED))
    running.join()

    assert outcomes[0].status is None
    assert fresh(Post, post.id).status is PostStatus.FAILED
    (line,) = [line for line in log_lines if line.get("event") == "post.lost_transition"]
    assert line["level"] == "error"
    assert {k: line[k] for k in (*lost, "status_now")} == {**lost, "status_now": "failed"}
    assert counted(telemetry[1], "herald.publish.lost_transitions", **lost) == before + 1
