"""Test set-up: a fresh Postgres database and a private Redis key space for every run.

The environment is fixed here, before any ``herald`` module reads its settings:
``HERALD_TEST_DATABASE_URL`` (an admin URL of the Postgres server; default the local one) and
``HERALD_TEST_REDIS_URL`` say where the servers are; this run gets its own database
``herald_test_<id>`` (dropped at the end) and its own broker key prefix in Redis.
"""

from __future__ import annotations

import os
import uuid

from hypothesis import settings

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_DATABASE_URL = os.environ.get(
    "HERALD_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_DATABASE = f"herald_test_{RUN_ID}"
TEST_DATABASE_URL = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + "/" + TEST_DATABASE

os.environ.update(
    {
        "HERALD_ENV": "test",
        "HERALD_DATABASE_URL": TEST_DATABASE_URL,
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

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.workers",
    "tests.fixtures.sandbox",
    "tests.fixtures.publishing",
    "tests.fixtures.processes",
    "tests.fixtures.monitoring",
]
