"""compose.yaml proven beyond its schema: every Herald service runs here, as compose would run
it, and passes its own healthcheck.

The test reads compose.yaml and, for each service built from Herald's image, runs the image's
entry point (``herald``) with the service's command and environment, interpolated as compose
does (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``) from test secrets. What compose
would resolve through its network is mapped onto this machine: the ``postgres`` and ``redis``
hosts onto the test servers (a fresh database, a private broker key prefix), the
``otel-collector`` host onto a local OTLP receiver, each port a service listens on onto a free
one, and ``/tmp`` onto the test's directory. The migrate service must exit 0; every other
service must pass its healthcheck command (the same command the image runs). Prometheus is
then started from Debian's binary with deploy/prometheus/prometheus.yml, its targets mapped
the same way, and must find every Herald target up with the metrics token compose gives it.
Services that are not Herald's (Postgres, Redis, Jaeger, Grafana, the collector) are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from herald import db
from herald.models import Workspace
from tests.conftest import ADMIN_DATABASE_URL, REDIS_URL, RUN_ID
from tests.fixtures.monitoring import (
    HERALD,
    ROOT,
    OtlpSink,
    Service,
    eventually,
    free_port,
    require_binary,
)

SECRETS = {
    "POSTGRES_PASSWORD": "compose-test-password",
    "HERALD_CRON_SECRET": "compose-test-cron-secret",
    "HERALD_TOKEN_KEYS": "k1:" + "C" * 43,
    "HERALD_JWT_SECRET": "compose-test-jwt-secret-0123456789abcdef",
    "HERALD_METRICS_TOKEN": "compose-test-metrics-token",
    "HERALD_DB_RUNTIME_PASSWORD": "compose-test-runtime",
    "HERALD_DB_SERVICE_PASSWORD": "compose-test-service",
    "HERALD_DB_MIGRATION_PASSWORD": "compose-test-migration",
    "HERALD_FLOWER_BASIC_AUTH": "operator:compose-test-flower",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana",
}
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable interpolation (the forms compose.yaml uses)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        current = variables.get(name)
        if operator == ":-":
            return current or argument
        if operator == ":?" and not current:
            raise AssertionError(f"compose would refuse to start: {argument}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def _entrypoint() -> list[str]:
    (line,) = [
        row
        for row in (ROOT / "Dockerfile").read_text().splitlines()
        if row.startswith("ENTRYPOINT")
    ]
    program = yaml.safe_load(line.removeprefix("ENTRYPOINT"))
    assert program == ["herald"]
    return [HERALD]


class LocalMap:
    """Where compose's names point on this machine."""

    def __init__(self, database_url: str, broker_url: str, otlp: OtlpSink, tmp: Path) -> None:
        self.hosts = {
            "postgres": urlsplit(database_url),
            "redis": urlsplit(broker_url),
            "otel-collector": urlsplit(otlp.url),
        }
        self.tmp = tmp
        self.ports: dict[str, dict[str, str]] = {}

    def url(self, value: str) -> str:
        parts = urlsplit(value)
        target = self.hosts.get(parts.hostname or "")
        if target is None:
            return value
        if parts.hostname == "postgres":  # the test's server and database, the compose driver
            # The image's superuser is the test's administrator; Herald's roles keep their
            # names, made the run's own (roles are global to the server), without a password.
            user = parts.username or ""
            netloc = (
                target.netloc
                if user == "herald"
                else f"{composed_role(user)}@{target.netloc.rpartition('@')[2]}"
            )
            return urlunsplit((parts.scheme, netloc, target.path, "", ""))
        return urlunsplit((parts.scheme, target.netloc, parts.path, parts.query, ""))

    def listening(self, service: str, found: list[str]) -> dict[str, str]:
        return self.ports.setdefault(service, {port: str(free_port()) for port in found})

    def text(self, service: str, value: str) -> str:
        for port, local in self.ports.get(service, {}).items():
            value = re.sub(rf"\b{port}\b", local, value)
        return value.replace("/tmp/", f"{self.tmp}/")


def _listening_ports(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    command = " ".join(service.get("command", []))
    ports = re.findall(r"--port[ =](\d+)", command)
    if env.get("HERALD_METRICS_PORT"):
        ports.append(env["HERALD_METRICS_PORT"])
    return ports


COMPOSE_ROLES = ("herald_runtime", "herald_service", "herald_migration")


def composed_role(name: str) -> str:
    """The run's own name for one of the roles compose.yaml connects as."""
    return f"{name}_compose_{RUN_ID}"


@pytest.fixture
def compose_database(engine: Engine) -> Iterator[str]:
    """A database of its own for the composed Herald (the migrate service builds it, roles
    included; they are dropped with it)."""
    name = f"herald_compose_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_DATABASE_URL, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield ADMIN_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for role in COMPOSE_ROLES:
            conn.execute(text(f'DROP ROLE IF EXISTS "{composed_role(role)}"'))
    admin.dispose()


def _healthcheck(
    name: str, service: dict[str, Any], env: dict[str, str], local: LocalMap
) -> Callable[[], bool]:
    kind, *rest = service["healthcheck"]["test"]
    argv = ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
    argv = [local.text(name, interpolate(part, env)) for part in argv]

    def passes() -> bool:
        try:
            result = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    return passes


def test_every_herald_service_of_compose_runs_here_and_passes_its_healthcheck(
    compose_database: str,
    redis_client: Any,
    otlp_sink: OtlpSink,
    services: Callable[..., Service],
    tmp_path: Path,
) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    herald = {n: s for n, s in compose["services"].items() if s.get("image") == "herald:latest"}
    assert set(herald) == {
        "migrate",
        "worker-publish",
        "worker",
        "worker-sweep",
        "beat",
        "api",
        "flower",
    }
    local = LocalMap(compose_database, REDIS_URL, otlp_sink, tmp_path)
    variables = {**SECRETS, "PATH": os.environ["PATH"]}
    base = {
        "PATH": f"{Path(HERALD).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),  # the workers' metrics directories land in the test's folder
        "PYTHONPATH": str(ROOT),
        # Isolation on the shared Redis: a test value, like the secrets, under the run's prefix
        # (so the run's clean-up removes its keys).
        "HERALD_BROKER_KEY_PREFIX": f"herald-test-{RUN_ID}:compose:",
    }

    def environment(name: str, service: dict[str, Any]) -> dict[str, str]:
        env = {
            k: local.url(interpolate(str(v), variables)) for k, v in service["environment"].items()
        }
        local.listening(name, _listening_ports(service, env))
        return {**base, **{k: local.text(name, v) for k, v in env.items()}}

    def argv(name: str, service: dict[str, Any]) -> list[str]:
        return [*_entrypoint(), *(local.text(name, str(part)) for part in service["command"])]

    migrate = herald.pop("migrate")
    done = subprocess.run(
        argv("migrate", migrate),
        env=environment("migrate", migrate),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    envs = {name: environment(name, service) for name, service in herald.items()}
    _row_level_security_holds(envs["api"])
    for name, service in herald.items():
        services(name, argv(name, service), envs[name])
    for name, service in herald.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        eventually(
            _healthcheck(name, service, envs[name], local),
            timeout=120,
            every=1.0,
            what=f"the healthcheck of {name}",
        )

    # The collector's address reaches every process: traces arrive at the OTLP receiver.
    eventually(lambda: otlp_sink.received("/v1/traces"), timeout=30, what="traces over OTLP")
    _prometheus_scrapes_every_herald_target(compose, local, tmp_path, services)


def _row_level_security_holds(env: dict[str, str]) -> None:
    """The composed services connect as roles the policies bind: the runtime role bypasses no
    policy and, with no workspace set, sees no tenant row; the service role may cross them."""
    runtime = db.make_engine(env["HERALD_DATABASE_URL"], poolclass=None)
    service = db.make_engine(env["HERALD_SERVICE_DATABASE_URL"], poolclass=None)
    try:
        with service.begin() as conn:
            conn.execute(insert(Workspace).values(name="A", slug=f"compose-{RUN_ID}"))
            assert conn.scalar(text("SELECT count(*) FROM workspaces")) == 1
        with runtime.connect() as conn:
            bypasses = "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user"
            assert conn.scalar(text(bypasses)) is False
            assert conn.scalar(text("SELECT count(*) FROM workspaces")) == 0
    finally:
        runtime.dispose()
        service.dispose()


def _prometheus_scrapes_every_herald_target(
    compose: dict[str, Any], local: LocalMap, tmp_path: Path, services: Callable[..., Service]
) -> None:
    prometheus = require_binary("prometheus", "apt-get install prometheus")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    token_file = tmp_path / "metrics_token"  # what compose's metrics_token secret holds
    token_file.write_text(SECRETS[compose["secrets"]["metrics_token"]["environment"]])
    herald_jobs = []
    for job in config["scrape_configs"]:
        job["scrape_interval"] = "1s"
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
        for group in job["static_configs"]:
            targets = []
            for target in group["targets"]:
                host, port = target.split(":")
                mapped = local.ports.get(host, {}).get(port)
                if mapped:
                    targets.append(f"127.0.0.1:{mapped}")
                    herald_jobs.append(job["job_name"])
            group["targets"] = targets
    config.pop("alerting")  # Alertmanager is another service; rule files stay as they are
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    (prometheus_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = ROOT / "deploy" / "prometheus" / "rules"
    if rules.exists():
        (prometheus_dir / "rules").symlink_to(rules)
    port = free_port()
    server = services(
        "prometheus",
        [
            prometheus,
            f"--config.file={prometheus_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        dict(os.environ),
    )
    server.wait_http(f"http://127.0.0.1:{port}/-/ready")

    def targets_up() -> dict[str, str]:
        body = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        return {
            t["labels"]["job"] + "@" + t["scrapeUrl"]: t["health"]
            for t in body["data"]["activeTargets"]
        }

    health = eventually(
        targets_up,
        until=lambda found: len(found) == len(herald_jobs) and set(found.values()) == {"up"},
        timeout=30,
        what="every Herald target up in Prometheus",
    )
    assert {key.split("@")[0] for key in health} == {"herald-api", "herald-worker", "herald-beat"}
