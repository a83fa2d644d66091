"""The monitoring API: probes, Prometheus' ``/metrics``, health and the figures.

Everything reads the real Postgres and the real Redis broker; the state (heartbeats, job runs,
posts, attempts, alerts) is written as rows, the way the workers and the alert engine write it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import signals
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine

from herald import db
from herald.api import create_app
from herald.beat_schedule import beat_schedule
from herald.celery_app import QUEUES
from herald.models import (
    Alert,
    AlertRule,
    AlertStatus,
    AuditVerification,
    Heartbeat,
    JobRun,
    PostStatus,
    PublishAttempt,
    Role,
    Severity,
    utcnow,
)
from herald.settings import get_settings
from herald.telemetry import records
from herald.telemetry.figures import Window, compute
from herald.telemetry.state import job_intervals
from tests.fixtures.database import service_session
from tests.fixtures.monitoring import (
    free_port,
    parse_exposition,
    promtool_check_metrics,
    total,
)
from tests.integration.api.conftest import (
    AuditOf,
    Tenant,
    _tenant,
    assert_error,
    bearer,
    mint,
    service_token,
)

AUDIT_VERIFY_JOB = "herald.audit.verify_chain"


def _app(**overrides: Any) -> TestClient:
    return TestClient(create_app(get_settings().model_copy(update=overrides)))


def _beats(*, age_s: float = 1.0, queues: tuple[str, ...] = QUEUES) -> None:
    now = utcnow()
    with service_session() as session:
        for queue in queues:
            records.record_heartbeat(
                session,
                queue=queue,
                sent_at=now - timedelta(seconds=age_s + 0.05),
                received_at=now - timedelta(seconds=age_s),
                worker=f"{queue}@host",
            )


def _jobs_ran(*, ago_s: float = 1.0) -> None:
    when = utcnow() - timedelta(seconds=ago_s)
    with service_session() as session:
        for job in job_intervals(beat_schedule(get_settings(), QUEUES)):
            session.merge(JobRun(job=job, last_started_at=when, last_succeeded_at=when))


def _alert(severity: Severity, status: AlertStatus, workspace_id: uuid.UUID | None = None) -> None:
    with service_session() as session:
        rule = AlertRule(
            workspace_id=workspace_id,
            name=f"rule-{uuid.uuid4().hex[:6]}",
            metric="publish.failure_rate",
            comparison=">",
            threshold=0.2,
            severity=severity,
        )
        session.add(rule)
        session.flush()
        session.add(
            Alert(
                rule_id=rule.id,
                workspace_id=workspace_id,
                fingerprint=uuid.uuid4().hex,
                status=status,
                severity=severity,
            )
        )


def _attempt(tenant: Tenant, outcome: str, *, latency_ms: int, started: datetime) -> None:
    post = tenant.post(status=PostStatus.PUBLISHED, published_at=started)
    with service_session() as session:
        session.add(
            PublishAttempt(
                workspace_id=tenant.workspace.id,
                post_id=post.id,
                provider="bluesky",
                attempt_number=1,
                started_at=started,
                finished_at=started + timedelta(milliseconds=latency_ms),
                latency_ms=latency_ms,
                outcome=outcome,
                error_code=None if outcome == "published" else "server_error",
            )
        )


@pytest.fixture
def healthy(committed: Engine) -> None:
    _beats()
    _jobs_ran()


# -- probes --------------------------------------------------------------------------------------


def test_healthz_answers_without_a_token_even_when_nothing_else_does(committed: Engine) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    service = db.get_service_engine()
    with _app(broker_url=f"redis://127.0.0.1:{free_port()}/0") as client:
        db.use_engine(db.make_engine(dead))
        try:
            response = client.get("/healthz")
            ready = client.get("/readyz")
        finally:
            db.use_engine(committed, service)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert ready.status_code == 503
    assert ready.json()["database"]["reachable"] is False
    assert ready.json()["broker"]["reachable"] is False


def test_readyz_is_200_when_database_and_broker_answer_and_503_when_the_broker_does_not(
    client: TestClient,
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["database"]["latency_ms"] > 0
    with _app(broker_url=f"redis://127.0.0.1:{free_port()}/0") as broken:
        response = broken.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["database"]["reachable"] is True
    assert response.json()["broker"]["error"]


# -- /metrics ------------------------------------------------------------------------------------


def test_metrics_is_open_without_a_token_and_guarded_with_one(committed: Engine) -> None:
    with _app() as client:
        assert client.get("/metrics").status_code == 200
    with _app(metrics_token=SecretStr("scrape-me")) as client:
        assert_error(client.get("/metrics"), 401, "invalid_metrics_token")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
        assert_error(wrong, 401, "invalid_metrics_token")
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")


def test_metrics_reports_the_database_and_broker_state_at_scrape_time(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    now = utcnow()
    tenant.post(scheduled_at=now - timedelta(minutes=10))  # due, not queued
    tenant.post(scheduled_at=now - timedelta(minutes=1))  # due, not queued
    tenant.post(scheduled_at=now + timedelta(hours=1))  # not due yet
    other_tenant.post(status=PostStatus.RETRYING, next_attempt_at=now - timedelta(seconds=30))
    other_tenant.post(status=PostStatus.QUEUED)
    other_tenant.post(status=PostStatus.PUBLISHED, published_at=now)
    tenant.post(status=PostStatus.PUBLISHED, scheduled_at=now - timedelta(days=3))  # old
    _beats(age_s=5, queues=("default", "publish"))
    records.record_job_run("herald.posts.dispatch_due", now - timedelta(seconds=3))
    _alert(Severity.CRITICAL, AlertStatus.FIRING)
    _alert(Severity.WARNING, AlertStatus.PENDING, tenant.workspace.id)
    _alert(Severity.WARNING, AlertStatus.RESOLVED)

    text = client.get("/metrics").text
    promtool_check_metrics(text)
    samples = parse_exposition(text)

    assert total(samples, "herald_database_up") == 1
    assert total(samples, "herald_broker_up") == 1
    assert {dict(ls)["queue"] for n, ls in samples if n == "herald_queue_length"} == set(QUEUES)
    assert total(samples, "herald_posts", status="scheduled") == 3
    assert total(samples, "herald_posts", status="retrying") == 1
    assert total(samples, "herald_posts", status="queued") == 1
    assert total(samples, "herald_posts", status="published") == 1  # the old one is out of window
    assert total(samples, "herald_posts", status="needs_review") == 0
    assert total(samples, "herald_posts_due_unqueued") == 3
    assert 595 <= total(samples, "herald_posts_oldest_due_age_seconds") <= 660
    assert 4 <= total(samples, "herald_queue_heartbeat_age_seconds", queue="default") <= 60
    assert total(samples, "herald_queue_heartbeat_age_seconds", queue="tokens") == float("inf")
    assert total(samples, "herald_workers_seen") == 2
    last = total(
        samples,
        "herald_periodic_job_last_success_timestamp_seconds",
        task="herald.posts.dispatch_due",
    )
    assert abs(last - now.timestamp()) < 10
    never = total(
        samples,
        "herald_periodic_job_last_success_timestamp_seconds",
        task="herald.posts.sweep_stuck",
    )
    assert never == 0
    assert total(samples, "herald_alerts", state="firing", severity="critical") == 1
    assert total(samples, "herald_alerts", state="pending", severity="warning") == 1
    assert total(samples, "herald_alerts") == 2  # resolved alerts are not open
    assert ("herald_audit_chain_ok", frozenset()) not in samples  # never verified yet


def test_metrics_and_the_audit_rule_read_the_same_recorded_verifier_result(
    client: TestClient, committed: Engine
) -> None:
    def chain_broken_figure() -> float | None:
        with db.session_scope() as session:
            [sample] = compute(session, "audit.chain_broken", Window.last(60, utcnow()))
        return sample.value

    verified = utcnow() - timedelta(minutes=5)
    with db.session_scope() as session:
        session.add(AuditVerification(verified_at=verified, ok=True, checked=10))
    samples = parse_exposition(client.get("/metrics").text)
    assert total(samples, "herald_audit_chain_ok") == 1
    assert chain_broken_figure() == 0
    last = total(samples, "herald_audit_chain_last_verified_timestamp_seconds")
    assert abs(last - verified.timestamp()) < 1

    # The verifier job ran and returned normally, but its recorded result is a break.
    with db.session_scope() as session:
        session.add(AuditVerification(ok=False, checked=41, first_break=42, reason="altered"))
    records.record_job_run(AUDIT_VERIFY_JOB, utcnow())
    assert total(parse_exposition(client.get("/metrics").text), "herald_audit_chain_ok") == 0
    assert chain_broken_figure() == 1


def test_metrics_keep_answering_while_the_broker_is_down(committed: Engine) -> None:
    with _app(broker_url=f"redis://127.0.0.1:{free_port()}/0") as client:
        response = client.get("/metrics")
    samples = parse_exposition(response.text)
    assert response.status_code == 200
    assert total(samples, "herald_broker_up") == 0
    assert total(samples, "herald_database_up") == 1
    assert not any(name == "herald_queue_length" for name, _ in samples)


# -- /api/postiz/monitoring/health ---------------------------------------------------------------


def test_health_is_healthy_when_every_queue_is_consumed_and_every_job_ran(
    client: TestClient, tenant: Tenant, healthy: None
) -> None:
    response = client.get("/api/postiz/monitoring/health", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert body["reasons"] == []
    assert body["workspace_id"] == str(tenant.workspace.id)
    assert body["database"]["reachable"] is True
    assert body["broker"]["reachable"] is True
    assert {q["name"] for q in body["queues"] if q["consumed"]} == set(QUEUES)
    assert all(not job["overdue"] for job in body["jobs"])
    assert body["alerts"]["open"] == 0


def test_health_is_unhealthy_503_when_no_worker_consumes_the_publish_queue(
    client: TestClient, tenant: Tenant, committed: Engine
) -> None:
    _jobs_ran()
    _beats(queues=("default", "tokens", "alerts"))
    _beats(age_s=3600, queues=("publish",))
    response = client.get("/api/postiz/monitoring/health", headers=tenant.headers)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert any("'publish'" in reason for reason in body["reasons"])
    publish = next(q for q in body["queues"] if q["name"] == "publish")
    assert publish["consumed"] is False
    assert publish["heartbeat_age_s"] >= 3600


def _job_last_succeeded(job: str, ago: timedelta) -> None:
    with service_session() as session:
        session.merge(JobRun(job=job, last_succeeded_at=utcnow() - ago))


@pytest.mark.parametrize(
    ("cause", "setup"),
    [
        ("a queue outside the publish path", lambda: _beats(age_s=3600, queues=("alerts",))),
        (
            "an overdue job",
            lambda: _job_last_succeeded("herald.posts.sweep_stuck", timedelta(days=1)),
        ),
        ("a critical alert", lambda: _alert(Severity.CRITICAL, AlertStatus.FIRING)),
    ],
)
def test_health_is_degraded_but_200_for_trouble_that_does_not_stop_publishing(
    client: TestClient, tenant: Tenant, healthy: None, cause: str, setup: Any
) -> None:
    setup()
    response = client.get("/api/postiz/monitoring/health", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "degraded"
    assert len(response.json()["reasons"]) == 1, (cause, response.json()["reasons"])


def test_a_queue_beat_expects_but_no_worker_consumed_reads_as_never_consumed(
    client: TestClient, tenant: Tenant, committed: Engine
) -> None:
    """Beat records the queues it sends heartbeats to; one no worker ever consumed is reported
    as never consumed everywhere, and the others keep the heartbeat they had."""
    consumed = tuple(queue for queue in QUEUES if queue != "alerts")
    _beats(queues=consumed)
    signals.beat_init.send(sender=None)  # as beat starting: every heartbeat queue now expected
    _beats(queues=consumed)  # a heartbeat after the start keeps the expectation
    with service_session() as session:
        rows = {row.queue: row for row in session.scalars(select(Heartbeat))}
    assert set(rows) == set(QUEUES)
    assert all(row.expected_since is not None for row in rows.values())
    assert rows["alerts"].received_at is None
    assert rows["alerts"].worker is None

    body = client.get("/api/postiz/monitoring/health", headers=tenant.headers).json()
    queues = {queue["name"]: queue for queue in body["queues"]}
    assert queues["alerts"]["consumed"] is False
    assert queues["alerts"]["heartbeat_age_s"] is None
    assert queues["alerts"]["worker"] is None
    assert all(queues[queue]["consumed"] for queue in consumed)
    samples = parse_exposition(client.get("/metrics").text)
    assert total(samples, "herald_queue_heartbeat_age_seconds", queue="alerts") == float("inf")
    assert total(samples, "herald_queue_heartbeat_age_seconds", queue="publish") < 60
    assert total(samples, "herald_workers_seen") == len(consumed)


def test_a_fresh_system_has_no_overdue_job_until_a_job_misses_its_allowance_since_beat_began(
    client: TestClient, tenant: Tenant, committed: Engine
) -> None:
    """Before, every periodic job of a fresh system was overdue (health: degraded) until its
    first run, an hour for the hourly ones. Now a job that never succeeded is judged from the
    first start of a beat that schedules it."""
    _beats()
    signals.beat_init.send(sender=None)  # as beat starting: every scheduled job now expected
    body = client.get("/api/postiz/monitoring/health", headers=tenant.headers).json()
    assert body["status"] == "healthy", body["reasons"]
    jobs = {job["job"]: job for job in body["jobs"]}
    assert set(jobs) == set(job_intervals(beat_schedule(get_settings(), QUEUES)))
    assert all(job["expected_since"] and not job["overdue"] for job in jobs.values())

    # Beat started long ago (more than the allowance of the sweep's interval) and the sweep
    # never succeeded since: that is overdue. A later beat start keeps the first one.
    every = job_intervals(beat_schedule(get_settings(), QUEUES))["herald.posts.sweep_stuck"]
    first = utcnow() - timedelta(seconds=every * get_settings().job_overdue_intervals + 60)
    with service_session() as session:
        session.merge(JobRun(job="herald.posts.sweep_stuck", expected_since=first))
    signals.beat_init.send(sender=None)
    body = client.get("/api/postiz/monitoring/health", headers=tenant.headers).json()
    assert body["status"] == "degraded"
    assert body["reasons"] == ["periodic job herald.posts.sweep_stuck is overdue"]
    sweep = next(job for job in body["jobs"] if job["job"] == "herald.posts.sweep_stuck")
    assert datetime.fromisoformat(sweep["expected_since"]) == first


def test_a_job_no_beat_has_scheduled_is_not_judged_overdue(
    client: TestClient, tenant: Tenant, committed: Engine
) -> None:
    _beats()
    body = client.get("/api/postiz/monitoring/health", headers=tenant.headers).json()
    assert body["status"] == "healthy", body["reasons"]
    assert all(job["expected_since"] is None and not job["overdue"] for job in body["jobs"])


def test_health_reports_the_last_hours_publishing_of_the_callers_workspace_only(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, healthy: None
) -> None:
    now = utcnow()
    _attempt(tenant, "published", latency_ms=200, started=now - timedelta(minutes=5))
    _attempt(tenant, "failed", latency_ms=400, started=now - timedelta(minutes=6))
    _attempt(tenant, "published", latency_ms=100, started=now - timedelta(hours=2))  # too old
    _attempt(other_tenant, "failed", latency_ms=900, started=now - timedelta(minutes=1))

    mine = client.get("/api/postiz/monitoring/health", headers=tenant.headers).json()
    assert mine["publish_last_hour"]["attempts"] == 2
    assert mine["publish_last_hour"]["published"] == 1
    assert mine["publish_last_hour"]["failure_rate"] == 0.5
    assert mine["publish_last_hour"]["latency_avg_s"] == pytest.approx(0.3)
    everyone = client.get("/api/postiz/monitoring/health", headers=bearer(service_token())).json()
    assert everyone["workspace_id"] is None
    assert everyone["publish_last_hour"]["attempts"] == 3


def test_health_is_for_owners_admins_and_the_service_role(
    client: TestClient, tenant: Tenant, healthy: None, audit_of: AuditOf
) -> None:
    admin = _tenant(Role.ADMIN)
    member = _tenant(Role.MEMBER)
    assert client.get("/api/postiz/monitoring/health", headers=admin.headers).status_code == 200
    denied = client.get("/api/postiz/monitoring/health", headers=member.headers)
    assert_error(denied, 403, "forbidden")
    assert_error(client.get("/api/postiz/monitoring/health"), 401, "missing_credentials")

    filtered = client.get(
        "/api/postiz/monitoring/health",
        params={"workspace_id": str(tenant.workspace.id)},
        headers=bearer(service_token()),
    )
    assert filtered.json()["workspace_id"] == str(tenant.workspace.id)
    uses = audit_of("service_role.use")
    assert [u.workspace_id for u in uses] == [tenant.workspace.id]
    assert uses[0].details["path"] == "/api/postiz/monitoring/health"


def test_a_workspace_query_that_disagrees_with_the_header_is_400(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, healthy: None, audit_of: AuditOf
) -> None:
    mismatch = client.get(
        "/api/postiz/monitoring/health",
        params={"workspace_id": str(other_tenant.workspace.id)},
        headers=tenant.headers,
    )
    assert_error(mismatch, 400, "workspace_mismatch")
    # Without the header, naming another tenant's workspace is a denied cross-tenant attempt.
    foreign = client.get(
        "/api/postiz/monitoring/health",
        params={"workspace_id": str(other_tenant.workspace.id)},
        headers=bearer(mint(tenant.user_id)),
    )
    assert_error(foreign, 404, "workspace_not_found")
    assert [e.workspace_id for e in audit_of("access.cross_tenant")] == [other_tenant.workspace.id]


def test_the_openapi_schema_documents_the_health_report_and_its_503(client: TestClient) -> None:
    schema = client.get("/api/postiz/openapi.json").json()
    responses = schema["paths"]["/api/postiz/monitoring/health"]["get"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HealthReport"
    }
    assert responses["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HealthReport"
    }
    status = schema["components"]["schemas"]["HealthReport"]["properties"]["status"]
    assert status["enum"] == ["healthy", "degraded", "unhealthy"]


# -- /api/postiz/monitoring/metrics --------------------------------------------------------------


def _figures(
    client: TestClient, headers: dict[str, str], **params: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float | None]:
    response = client.get("/api/postiz/monitoring/metrics", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return {
        (f["name"], frozenset(f["labels"].items())): f["value"] for f in response.json()["figures"]
    }


def test_figures_are_computed_for_the_window_and_the_callers_workspace(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    now = utcnow()
    for latency in (100, 200, 300, 400):
        _attempt(tenant, "published", latency_ms=latency, started=now - timedelta(minutes=10))
    _attempt(tenant, "transient", latency_ms=1000, started=now - timedelta(minutes=10))
    _attempt(tenant, "published", latency_ms=50, started=now - timedelta(days=2))  # outside
    _attempt(other_tenant, "failed", latency_ms=700, started=now - timedelta(minutes=10))

    mine = _figures(client, tenant.headers)
    bluesky = frozenset({("provider", "bluesky")})
    assert (
        mine[("publish.attempts", frozenset({("provider", "bluesky"), ("outcome", "published")}))]
        == 4
    )
    assert mine[("publish.failure_rate", bluesky)] == pytest.approx(0.2)
    assert mine[("publish.latency_avg_s", bluesky)] == pytest.approx(0.4)
    assert mine[("publish.latency_p95_s", bluesky)] == pytest.approx(0.88)
    assert (
        mine[("publish.errors", frozenset({("provider", "bluesky"), ("code", "server_error")}))]
        == 1
    )
    assert ("publish.delay_p50_s", frozenset()) in mine

    week = _figures(
        client,
        bearer(service_token()),
        **{"from": (now - timedelta(days=7)).isoformat(), "to": now.isoformat()},
    )
    assert (
        week[("publish.attempts", frozenset({("provider", "bluesky"), ("outcome", "published")}))]
        == 5
    )
    assert (
        week[("publish.attempts", frozenset({("provider", "bluesky"), ("outcome", "failed")}))] == 1
    )


def test_a_backwards_or_too_long_window_is_400(client: TestClient, tenant: Tenant) -> None:
    now = utcnow()
    backwards = {"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}
    response = client.get(
        "/api/postiz/monitoring/metrics", headers=tenant.headers, params=backwards
    )
    assert_error(response, 400, "invalid_window")
    too_long = {"from": (now - timedelta(days=90)).isoformat()}
    response = client.get("/api/postiz/monitoring/metrics", headers=tenant.headers, params=too_long)
    assert_error(response, 400, "invalid_window")
    naive = client.get(
        "/api/postiz/monitoring/metrics",
        headers=tenant.headers,
        params={"from": "2026-01-01T00:00:00"},
    )
    assert naive.status_code in (400, 422)


# -- herald health -------------------------------------------------------------------------------


def test_herald_health_prints_the_report_and_exits_by_its_status(committed: Engine) -> None:
    from click.testing import CliRunner

    from herald.cli import cli

    runner = CliRunner()
    unhealthy = runner.invoke(cli, ["health"])
    assert unhealthy.exit_code == 2, unhealthy.output
    assert "Herald is unhealthy" in unhealthy.output
    assert "no worker consumed queue 'publish'" in unhealthy.output
    assert "Queues" in unhealthy.output
    assert "Periodic jobs" in unhealthy.output

    _beats()
    _jobs_ran()
    healthy = runner.invoke(cli, ["health"])
    assert healthy.exit_code == 0, healthy.output
    assert "Herald is healthy" in healthy.output
    report = runner.invoke(cli, ["health", "--json"])
    assert report.exit_code == 0
    assert json.loads(report.output)["status"] == "healthy"


def test_herald_health_shows_a_job_that_never_ran_as_expected_since_beat_began(
    committed: Engine,
) -> None:
    from click.testing import CliRunner

    from herald.cli import cli

    _beats()
    signals.beat_init.send(sender=None)
    result = CliRunner().invoke(cli, ["health"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "never (expected since" in result.output
