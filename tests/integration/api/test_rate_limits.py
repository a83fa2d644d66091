"""Per-workspace API rate limits: 429 with Retry-After past the limit, one workspace's burst
never limits another, counted in process or shared through Redis, and documented."""

from __future__ import annotations

import uuid

import redis
from fastapi.testclient import TestClient

from herald.api import create_app
from herald.settings import get_settings
from tests.conftest import REDIS_URL, RUN_ID
from tests.integration.api.conftest import Tenant, assert_error


def test_a_workspace_past_its_limit_gets_429_with_retry_after_and_others_do_not(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    settings = get_settings().model_copy(
        update={"api_rate_limit": 3, "api_rate_limit_window_s": 3600}
    )
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/api/postiz/posts", headers=tenant.headers) for _ in range(4)]
        other = client.get("/api/postiz/posts", headers=other_tenant.headers)
        document = client.get("/api/postiz/openapi.json").json()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_error(answers[3], 429, "rate_limited")
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 3600
    assert other.status_code == 200
    assert "429" in document["paths"]["/api/postiz/posts"]["get"]["responses"]


def test_with_a_redis_url_every_api_process_shares_the_count(tenant: Tenant) -> None:
    prefix = f"herald-test-{RUN_ID}-{uuid.uuid4().hex[:6]}:"
    settings = get_settings().model_copy(
        update={
            "api_rate_limit": 2,
            "api_rate_limit_window_s": 3600,
            "api_rate_limit_redis_url": REDIS_URL,
            "broker_key_prefix": prefix,
        }
    )
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        codes = [
            first.get("/api/postiz/posts", headers=tenant.headers).status_code,
            second.get("/api/postiz/posts", headers=tenant.headers).status_code,
            first.get("/api/postiz/posts", headers=tenant.headers).status_code,
        ]
    assert codes == [200, 200, 429]
    client = redis.Redis.from_url(REDIS_URL)
    keys = client.keys(f"{prefix}ratelimit:{tenant.workspace.id}:*")
    assert [int(client.get(k) or 0) for k in keys] == [3]
    client.delete(*keys)
