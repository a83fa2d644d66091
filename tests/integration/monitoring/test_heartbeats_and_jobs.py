"""Heartbeats (beat → every queue → the consuming worker records the round trip) and the
runs of periodic jobs, recorded by the task base."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from herald.beat_schedule import HEARTBEAT_TASK, beat_schedule
from herald.celery_app import QUEUES, app
from herald.models import AuditEvent, Heartbeat, JobRun, Workspace
from herald.settings import Settings
from herald.telemetry import metrics
from tests.fixtures.database import service_session
from tests.fixtures.monitoring import eventually
from tests.integration.monitoring import job_tasks


def _heartbeats() -> dict[str, Heartbeat]:
    with service_session() as session:
        return {row.queue: row for row in session.scalars(select(Heartbeat))}


def _run(job: str) -> JobRun | None:
    with service_session() as session:
        return session.get(JobRun, job)


def test_beat_sends_a_heartbeat_to_every_queue_routed_to_it() -> None:
    settings = Settings(heartbeat_interval_s=7, heartbeat_max_age_s=30)
    entries = [e for e in beat_schedule(settings, QUEUES).values() if e["task"] == HEARTBEAT_TASK]
    assert sorted(e["options"]["queue"] for e in entries) == sorted(QUEUES)
    for entry in entries:
        assert entry["kwargs"] == {"queue": entry["options"]["queue"]}
        assert entry["schedule"] == 7
        assert entry["options"]["expires"] == 30


def test_every_job_beat_runs_is_declared_periodic_so_its_runs_are_recorded() -> None:
    app.loader.import_default_modules()
    jobs = {e["task"] for e in app.conf.beat_schedule.values()} - {HEARTBEAT_TASK}
    assert jobs
    assert {name for name in jobs if not app.tasks[name].periodic} == set()
    assert not app.tasks[HEARTBEAT_TASK].periodic


def test_every_job_beat_runs_reads_every_workspace_as_the_service_role() -> None:
    """A beat job carries no workspace: in a tenant scope it would see no row at all."""
    app.loader.import_default_modules()
    jobs = {e["task"] for e in app.conf.beat_schedule.values()}
    assert {name for name in jobs if app.tasks[name].scope != "service"} == set()


def test_the_worker_consuming_each_queue_records_one_heartbeat_row_per_queue(
    worker: Any, celery_app: Any
) -> None:
    for queue in QUEUES:
        celery_app.send_task(HEARTBEAT_TASK, kwargs={"queue": queue}, queue=queue)
    first = eventually(
        _heartbeats, until=lambda beats: set(beats) == set(QUEUES), what="a row for every queue"
    )
    for row in first.values():
        assert row.sent_at <= row.received_at
        assert row.round_trip_s < 30
        assert row.worker  # the node that consumed it (the in-thread worker names only its host)
        assert row.worker in worker.hostname

    celery_app.send_task(HEARTBEAT_TASK, kwargs={"queue": "publish"}, queue="publish")
    later = eventually(
        _heartbeats,
        until=lambda beats: beats["publish"].received_at > first["publish"].received_at,
        what="the publish queue's heartbeat to be updated",
    )
    assert set(later) == set(QUEUES)  # upserted in place: still one row per queue
    assert later["default"].received_at == first["default"].received_at


def test_a_periodic_job_records_its_last_success_and_its_last_failure(
    worker: Any, committed: Engine
) -> None:
    job_tasks.periodic_job.delay()
    ok = eventually(lambda: _run("tests.monitoring.job"), what="the job's first run")
    assert ok.last_succeeded_at is not None
    assert ok.last_started_at is not None
    assert ok.last_started_at <= ok.last_succeeded_at
    assert ok.last_failed_at is None

    job_tasks.periodic_job.delay(fail=True)
    failed = eventually(
        lambda: _run("tests.monitoring.job"),
        until=lambda run: run is not None and run.last_failed_at is not None,
        what="the job's failure to be recorded",
    )
    assert failed is not None
    assert failed.last_succeeded_at == ok.last_succeeded_at
    assert failed.last_error is not None
    assert "JobBroke: the job broke" in failed.last_error
    assert "sekrit-value-123" not in failed.last_error  # redacted like logs
    with service_session() as session:  # the job's own writes rolled back; its record did not
        slugs = list(session.scalars(select(Workspace.slug).where(Workspace.slug.like("job-%"))))
    assert len(slugs) == 1


def test_a_task_not_declared_periodic_records_no_job_run(worker: Any, committed: Engine) -> None:
    job_tasks.plain_task.delay()
    eventually(_slugs_written, what="the plain task to run")
    assert _run("tests.monitoring.not_a_job") is None


def _slugs_written() -> list[str]:
    with service_session() as session:
        return list(session.scalars(select(Workspace.slug).where(Workspace.slug.like("job-%"))))


def _service_scope_uses(task: str) -> float:
    sample = metrics.REGISTRY.get_sample_value("herald_service_scope_uses_total", {"task": task})
    return sample or 0.0


def test_a_job_in_the_service_scope_is_counted_not_audited_per_tick(committed: Engine) -> None:
    app.loader.import_default_modules()
    name = "herald.maintenance.purge"
    before = _service_scope_uses(name)
    with service_session() as session:
        audited = session.scalar(select(func.count()).select_from(AuditEvent))
    app.tasks[name].apply().get(timeout=30)
    assert _service_scope_uses(name) == before + 1
    with service_session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == audited
