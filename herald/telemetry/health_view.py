"""``herald health``: the health report as tables for a terminal (rich)."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table

from herald.telemetry.health import HealthReport, JobHealth, Reachability

_STYLE = {"healthy": "bold green", "degraded": "bold yellow", "unhealthy": "bold red"}


def _yes(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    return f"{(now - value).total_seconds():.0f} s ago"


def _success(job: JobHealth, now: datetime) -> str:
    """The last success; for a job that never succeeded, since when beat has expected it."""
    if job.last_succeeded_at is None and job.expected_since is not None:
        return f"never (expected since {_when(job.expected_since, now)})"
    return _when(job.last_succeeded_at, now)


def _check(name: str, check: Reachability) -> tuple[str, str, str, str]:
    return name, _yes(check.reachable), _num(check.latency_ms, " ms"), check.error or ""


def render(report: HealthReport, console: Console | None = None) -> None:
    out = console or Console()
    scope = f" (workspace {report.workspace_id})" if report.workspace_id else ""
    out.print(f"Herald is [{_STYLE[report.status]}]{report.status}[/]{scope}")
    for reason in report.reasons:
        out.print(f"  • {reason}")

    checks = Table("dependency", "reachable", "latency", "error", title="Dependencies")
    checks.add_row(*_check("database", report.database))
    checks.add_row(*_check("broker", report.broker))
    out.print(checks)

    queues = Table("queue", "waiting", "consumed", "heartbeat age", "round trip", "worker")
    queues.title = "Queues"
    for q in report.queues:
        queues.add_row(
            q.name,
            "—" if q.length is None else str(q.length),
            _yes(q.consumed),
            _num(q.heartbeat_age_s, " s"),
            _num(q.round_trip_s, " s", 3),
            q.worker or "—",
        )
    out.print(queues)

    jobs = Table("periodic job", "every", "last success", "last failure", "overdue", "last error")
    jobs.title = "Periodic jobs"
    for job in report.jobs:
        jobs.add_row(
            job.job,
            _num(job.interval_s, " s"),
            _success(job, report.checked_at),
            _when(job.last_failed_at, report.checked_at),
            "[red]yes[/]" if job.overdue else "no",
            (job.last_error or "")[:60],
        )
    out.print(jobs)

    if report.posts is not None:
        posts = Table("status", "posts", title="Posts")
        for status, count in report.posts.by_status.items():
            posts.add_row(status, str(count))
        posts.add_row("due, not queued", str(report.posts.due_unqueued))
        posts.add_row("oldest due age", _num(report.posts.oldest_due_age_s, " s"))
        out.print(posts)
    if report.publish_last_hour is not None:
        p = report.publish_last_hour
        rate = None if p.failure_rate is None else p.failure_rate * 100
        out.print(
            f"Last hour: {p.attempts} publish attempts, {p.published} published, "
            f"{p.failed} failed (failure rate {_num(rate, ' %')}), latency avg "
            f"{_num(p.latency_avg_s, ' s', 3)}, p95 {_num(p.latency_p95_s, ' s', 3)}"
        )
    if report.alerts is not None:
        open_by = ", ".join(f"{n} {s}" for s, n in report.alerts.by_severity.items() if n)
        out.print(f"Open alerts: {report.alerts.open}" + (f" ({open_by})" if open_by else ""))
