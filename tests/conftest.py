"""Test set-up: a fresh Postgres database and a private Redis key space for every run.

The environment is fixed here, before any ``herald`` module reads its settings:
``HERALD_TEST_DATABASE_URL`` (an admin URL of the Postgres server; default the local one),
``HERALD_TEST_REDIS_URL`` and ``HERALD_TEST_AMQP_URL`` (RabbitMQ, see tests/fixtures/brokers.py)
say where the servers are; this run gets its own database ``herald_test_<id>`` (dropped at the
end), its own broker key prefix in Redis and its own RabbitMQ virtual host.

When nothing answers at the Postgres or Redis URL (a fresh machine with only python3 and make),
the run starts throw-away servers from the dev dependencies instead (tests/fixtures/servers.py)
and stops them at the end. Servers that answer are used as they are.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from hypothesis import settings

from tests.fixtures.servers import PostgresServer, RedisServer, answers

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_DATABASE_URL = os.environ.get(
    "HERALD_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_THROWAWAY: list[PostgresServer | RedisServer] = []
if not answers(ADMIN_DATABASE_URL, 5432):
    _THROWAWAY.append(postgres := PostgresServer())
    print(f"tests: no Postgres at {ADMIN_DATABASE_URL}; using {postgres.url}", file=sys.stderr)
    ADMIN_DATABASE_URL = postgres.url
if not answers(REDIS_URL, 6379):
    _THROWAWAY.append(private_redis := RedisServer())
    print(f"tests: no Redis at {REDIS_URL}; using {private_redis.url}", file=sys.stderr)
    REDIS_URL = private_redis.url
TEST_DATABASE = f"herald_test_{RUN_ID}"
# The run's database as the administrator (test set-up only) and as each of Herald's roles
# (tests/fixtures/database.py creates them): the application connects as the runtime role.
TEST_DATABASE_URL = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + "/" + TEST_DATABASE
ROLE_NAMES = {kind: f"herald_{kind}_{RUN_ID}" for kind in ("migration", "runtime", "service")}


def database_url_as(role: str) -> str:
    """The run's database URL with ``role`` as the user (the test server trusts local users)."""
    from sqlalchemy.engine import make_url

    return make_url(TEST_DATABASE_URL).set(username=role, password=None).render_as_string(False)


RUNTIME_DATABASE_URL = database_url_as(ROLE_NAMES["runtime"])
SERVICE_DATABASE_URL = database_url_as(ROLE_NAMES["service"])
MIGRATION_DATABASE_URL = database_url_as(ROLE_NAMES["migration"])

os.environ.update(
    {
        "HERALD_ENV": "test",
        "HERALD_DATABASE_URL": RUNTIME_DATABASE_URL,
        "HERALD_SERVICE_DATABASE_URL": SERVICE_DATABASE_URL,
        "HERALD_MIGRATION_DATABASE_URL": MIGRATION_DATABASE_URL,
        "HERALD_BROKER_URL": REDIS_URL,
        "HERALD_REDIS_URL": REDIS_URL,
        "HERALD_BROKER_KEY_PREFIX": f"herald-test-{RUN_ID}:",
        "HERALD_LOG_FORMAT": "json",
        "HERALD_CRON_SECRET": "test-cron-secret-" + RUN_ID,
        "HERALD_JWT_SECRET": "test-jwt-secret-" + RUN_ID + "-0123456789abcdef",
        "HERALD_TOKEN_KEYS": "test1:" + "A" * 43 + ",old:" + "B" * 43,
    }
)

# Property tests are reproducible: a fixed seed per test, no example database between runs.
settings.register_profile("herald", derandomize=True, database=None, deadline=None)
settings.load_profile("herald")


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in _THROWAWAY:
        server.close()


pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.workers",
    "tests.fixtures.brokers",
    "tests.fixtures.sandbox",
    "tests.fixtures.media",
    "tests.fixtures.publishing",
    "tests.fixtures.processes",
    "tests.fixtures.monitoring",
]
