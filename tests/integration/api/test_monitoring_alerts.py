"""``/api/postiz/monitoring/`` alerts, rules and silences, and ``/api/postiz/cron/check-alerts``:
who sees what, acknowledgement, validation, and the cron secret."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from herald.models import Alert, AlertRule, AlertStatus, Membership, Role, Severity, utcnow
from herald.settings import get_settings
from tests.fixtures.database import service_session
from tests.integration.api.conftest import (
    AuditOf,
    Tenant,
    assert_error,
    bearer,
    mint,
    service_token,
)

MONITORING = "/api/postiz/monitoring"


@pytest.fixture(autouse=True)
def _no_default_rules(tenant: Tenant) -> None:
    with service_session() as session:
        session.execute(delete(AlertRule))


def _alert(
    workspace_id: uuid.UUID | None, *, status: AlertStatus = AlertStatus.FIRING
) -> uuid.UUID:
    with service_session() as session:
        rule = AlertRule(
            workspace_id=workspace_id,
            name=f"rule-{uuid.uuid4().hex[:6]}",
            metric="publish.failure_rate",
            comparison=">",
            threshold=0.2,
            severity=Severity.ERROR,
        )
        session.add(rule)
        session.flush()
        alert = Alert(
            rule_id=rule.id,
            workspace_id=workspace_id,
            fingerprint=uuid.uuid4().hex,
            labels={"rule": rule.name, "severity": "error"},
            status=status,
            severity=Severity.ERROR,
            fired_at=utcnow() - timedelta(minutes=10),
            resolved_at=utcnow() if status is AlertStatus.RESOLVED else None,
        )
        session.add(alert)
        session.flush()
        return alert.id


def _ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_owners_see_their_workspace_alerts_only(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = _alert(tenant.workspace.id)
    _alert(other_tenant.workspace.id)
    _alert(None)  # global: the service role's
    assert _ids(client.get(f"{MONITORING}/alerts", headers=tenant.headers)) == {str(mine)}


def test_the_service_role_sees_every_workspace_and_may_filter(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, audit_of: AuditOf
) -> None:
    mine, theirs, everyone = (
        _alert(tenant.workspace.id),
        _alert(other_tenant.workspace.id),
        _alert(None),
    )
    everything = client.get(f"{MONITORING}/alerts", headers=bearer(service_token()))
    assert _ids(everything) == {str(mine), str(theirs), str(everyone)}
    filtered = client.get(
        f"{MONITORING}/alerts",
        params={"workspace_id": str(tenant.workspace.id)},
        headers=bearer(service_token()),
    )
    assert _ids(filtered) == {str(mine)}
    assert audit_of("service_role.use")  # its reads are audited


def test_a_workspace_query_that_disagrees_with_the_header_is_400(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    for headers in (tenant.headers, bearer(service_token(), tenant.workspace.id)):
        response = client.get(
            f"{MONITORING}/alerts",
            params={"workspace_id": str(other_tenant.workspace.id)},
            headers=headers,
        )
        assert_error(response, 400, "workspace_mismatch")


def test_members_do_not_see_monitoring(client: TestClient, tenant: Tenant) -> None:
    user = f"member-{uuid.uuid4().hex[:6]}"
    with service_session() as session:
        session.add(Membership(workspace_id=tenant.workspace.id, user_id=user, role=Role.MEMBER))
    response = client.get(f"{MONITORING}/alerts", headers=bearer(mint(user), tenant.workspace.id))
    assert_error(response, 403, "forbidden")


def test_filters_by_severity_and_state(client: TestClient, tenant: Tenant) -> None:
    firing = _alert(tenant.workspace.id)
    resolved = _alert(tenant.workspace.id, status=AlertStatus.RESOLVED)
    url = f"{MONITORING}/alerts"
    assert _ids(client.get(url, headers=tenant.headers)) == {str(firing)}
    assert _ids(client.get(url, params={"state": "resolved"}, headers=tenant.headers)) == {
        str(resolved)
    }
    assert _ids(client.get(url, params={"severity": "critical"}, headers=tenant.headers)) == set()
    assert_error(
        client.get(url, params={"state": "bogus"}, headers=tenant.headers), 422, "validation_failed"
    )


def test_acknowledge_records_who_when_and_the_note(
    client: TestClient, tenant: Tenant, audit_of: AuditOf
) -> None:
    alert_id = _alert(tenant.workspace.id)
    response = client.post(
        f"{MONITORING}/alerts/{alert_id}/ack", json={"note": "on it"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["acknowledged_by"] == tenant.user_id
    assert body["ack_note"] == "on it"
    assert body["acknowledged_at"]
    [event] = audit_of("alert.acknowledged")
    assert event.resource_id == str(alert_id)


def test_acknowledge_the_seed_way_and_refusals(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    alert_id = _alert(tenant.workspace.id)
    response = client.post(
        f"{MONITORING}/alerts", json={"alert_id": str(alert_id)}, headers=tenant.headers
    )
    assert response.json()["acknowledged_by"] == tenant.user_id
    theirs = _alert(other_tenant.workspace.id)
    assert_error(
        client.post(f"{MONITORING}/alerts/{theirs}/ack", headers=tenant.headers), 404, "not_found"
    )
    resolved = _alert(tenant.workspace.id, status=AlertStatus.RESOLVED)
    assert_error(
        client.post(f"{MONITORING}/alerts/{resolved}/ack", headers=tenant.headers), 409, "conflict"
    )


def test_stats_count_open_alerts_and_mean_times(client: TestClient, tenant: Tenant) -> None:
    _alert(tenant.workspace.id)
    _alert(tenant.workspace.id, status=AlertStatus.RESOLVED)
    response = client.get(f"{MONITORING}/alerts/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["open_total"] == 1
    assert stats["open_by_severity"]["error"] == 1
    assert stats["resolved"] == 1
    assert stats["mean_time_to_resolve_s"] == pytest.approx(600, abs=30)
    assert stats["mean_time_to_acknowledge_s"] is None


RULE = {
    "name": "Slow Bluesky",
    "metric": "publish.latency_avg_s",
    "window_s": 600,
    "comparison": ">",
    "threshold": 10,
    "min_samples": 3,
    "severity": "warning",
    "group_by": ["provider"],
    "filters": {"provider": "bluesky"},
}


def test_rules_are_created_read_changed_and_deleted(client: TestClient, tenant: Tenant) -> None:
    created = client.post(f"{MONITORING}/rules", json=RULE, headers=tenant.headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["workspace_id"] == str(tenant.workspace.id)
    assert rule["builtin"] is False
    url = f"{MONITORING}/rules/{rule['id']}"
    assert client.get(url, headers=tenant.headers).json()["name"] == "Slow Bluesky"
    changed = client.patch(url, json={"threshold": 20, "enabled": False}, headers=tenant.headers)
    assert changed.json()["threshold"] == 20
    assert changed.json()["enabled"] is False
    again = client.post(f"{MONITORING}/rules", json=RULE, headers=tenant.headers)
    assert_error(again, 409, "conflict")
    assert client.delete(url, headers=tenant.headers).status_code == 204
    assert_error(client.get(url, headers=tenant.headers), 404, "not_found")


INVALID_RULES: list[tuple[dict[str, Any], str]] = [
    ({"metric": "publish.nonsense"}, "body.metric"),
    ({"window_s": 0}, "body.window_s"),
    ({"window_s": 10**9}, "body.window_s"),
    ({"comparison": "~"}, "body.comparison"),
    ({"threshold": "NaN"}, "body.threshold"),
    ({"severity": "apocalyptic"}, "body.severity"),
    ({"no_data_state": "panic"}, "body.no_data_state"),
    ({"labels": {"bad label": "x"}}, "body.labels"),
    ({"labels": {"severity": "x"}}, "body.labels"),
    ({"group_by": ["queue"]}, "group_by"),
    ({"filters": {"job": "x"}}, "filters"),
    ({"metric": "workers.seen", "group_by": [], "filters": {}}, "metric"),
    ({"receivers": ["nowhere"]}, "receivers"),
    ({"unknown_field": 1}, "body.unknown_field"),
]


def test_an_invalid_rule_is_a_clear_422(client: TestClient, tenant: Tenant) -> None:
    for change, field in INVALID_RULES:
        response = client.post(
            f"{MONITORING}/rules", json={**RULE, **change}, headers=tenant.headers
        )
        # A shape the document refuses is validation_failed (body.<field>); what the
        # catalogue or the settings refuse is rule_invalid (<field>).
        code = "validation_failed" if field.startswith("body.") else "rule_invalid"
        error = assert_error(response, 422, code)
        fields = [problem["field"] for problem in error["details"]["fields"]]
        assert field in fields, (change, error)
    assert client.get(f"{MONITORING}/rules", headers=tenant.headers).json() == []


def test_default_rules_can_be_disabled_not_deleted(client: TestClient, tenant: Tenant) -> None:
    from herald.alerts.defaults import install

    with service_session() as session:
        install(session)
    rules = client.get(f"{MONITORING}/rules", headers=bearer(service_token())).json()
    builtin = next(r for r in rules if r["name"] == "Failed jobs spike")
    url = f"{MONITORING}/rules/{builtin['id']}"
    assert_error(client.delete(url, headers=bearer(service_token())), 409, "conflict")
    assert (
        client.patch(url, json={"enabled": False}, headers=bearer(service_token())).json()[
            "enabled"
        ]
        is False
    )
    assert client.get(f"{MONITORING}/rules", headers=tenant.headers).json() == []


def test_silences_are_created_listed_and_expired(client: TestClient, tenant: Tenant) -> None:
    body = {
        "matchers": [{"name": "rule", "op": "=~", "value": "Slow.*"}],
        "ends_at": (utcnow() + timedelta(hours=2)).isoformat(),
        "comment": "maintenance",
    }
    created = client.post(f"{MONITORING}/silences", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["active"] is True
    assert silence["workspace_id"] == str(tenant.workspace.id)
    listed = client.get(f"{MONITORING}/silences", headers=tenant.headers).json()
    assert [s["id"] for s in listed] == [silence["id"]]
    expired = client.delete(f"{MONITORING}/silences/{silence['id']}", headers=tenant.headers)
    assert expired.json()["active"] is False
    assert client.get(f"{MONITORING}/silences", headers=tenant.headers).json() == []
    # The shape is the document's (any string is a value); whether it compiles is a rule.
    good = {"name": "rule", "op": "=", "value": "(unclosed"}
    bad = {**body, "matchers": [good, {"name": "rule", "op": "!~", "value": "(unclosed"}]}
    refused = client.post(f"{MONITORING}/silences", json=bad, headers=tenant.headers)
    assert_error(refused, 422, "matcher_invalid")
    assert refused.json()["error"]["details"]["fields"] == [
        {
            "field": "body.matchers.1.value",
            "message": "not a regular expression that compiles",
            "type": "regex_invalid",
        }
    ]
    past = {**body, "ends_at": (utcnow() - timedelta(minutes=1)).isoformat()}
    assert_error(
        client.post(f"{MONITORING}/silences", json=past, headers=tenant.headers),
        400,
        "alerts_error",
    )


def test_the_figure_catalogue_is_listed(client: TestClient, tenant: Tenant) -> None:
    figures = {
        f["name"]: f for f in client.get(f"{MONITORING}/figures", headers=tenant.headers).json()
    }
    assert "provider" in figures["publish.failure_rate"]["labels"]
    assert figures["workers.seen"]["per_workspace"] is False


CRON = "/api/postiz/cron/check-alerts"


def test_cron_without_the_secret_is_401_and_a_security_event(
    client: TestClient, tenant: Tenant, audit_of: AuditOf, log_lines: list[dict[str, Any]]
) -> None:
    attempts = [None, "Bearer wrong-secret", "Basic dXNlcjpwYXNz", "Bearer "]
    for authorization in attempts:
        headers = {"Authorization": authorization} if authorization else {}
        assert_error(client.post(CRON, headers=headers), 401, "unauthorized")
    events = audit_of("access.denied")
    assert [event.actor_type for event in events] == ["cron"] * len(attempts)
    denied = [line for line in log_lines if line.get("event") == "security.cron_denied"]
    assert len(denied) == len(attempts)
    assert "wrong-secret" not in str(log_lines)


def test_cron_with_the_secret_evaluates_the_rules(client: TestClient, tenant: Tenant) -> None:
    client.post(f"{MONITORING}/rules", json=RULE, headers=tenant.headers)
    secret = get_settings().cron_secret.get_secret_value()
    response = client.post(CRON, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"rules": 1, "transitions": 0, "errors": 0}
    with service_session() as session:
        [rule] = session.scalars(select(AlertRule)).all()
        assert rule.last_evaluated_at is not None


def test_a_workspaces_open_alert_figure_counts_the_system_wide_ones_as_health_does(
    client: TestClient, tenant: Tenant
) -> None:
    """``alerts.open`` for a workspace includes the system-wide alerts (workers down concerns
    every workspace), as its health report does. Read under the workspace's row-level security
    they were invisible: the figure said 0 while health said a critical alert was open."""
    _alert(tenant.workspace.id)
    _alert(None)
    _alert(None, status=AlertStatus.RESOLVED)  # not open: not counted

    answer = client.get("/api/postiz/monitoring/metrics", headers=tenant.headers)

    assert answer.status_code == 200, answer.text
    open_alerts = [f for f in answer.json()["figures"] if f["name"] == "alerts.open"]
    assert sum(f["value"] or 0 for f in open_alerts) == 2


@pytest.mark.parametrize("pattern", ["a{2000}", "a{1,2000}", "(a{200}){200}", "x{99999999}"])
def test_a_silence_regex_whose_counted_repeats_would_blow_up_is_refused(
    client: TestClient, tenant: Tenant, pattern: str
) -> None:
    """The regex engine expands a counted repeat as it compiles: a{99999999} took the API
    process to 27 GB. A count past 1,000 (Alertmanager's RE2 bound) or nested counts past
    10,000 in all are refused before anything compiles."""
    body = {
        "matchers": [{"name": "rule", "op": "=~", "value": pattern}],
        "ends_at": (utcnow() + timedelta(hours=1)).isoformat(),
    }
    refused = client.post(f"{MONITORING}/silences", json=body, headers=tenant.headers)
    assert_error(refused, 422, "matcher_invalid")


def test_a_silence_expired_before_it_starts_is_gone_at_once_and_expired_once(
    client: TestClient, tenant: Tenant, audit_of: AuditOf
) -> None:
    """Expiring a silence set for later moved its end to its (future) start: it stayed listed as
    active until then, and each further DELETE expired it, and audited it, again."""
    body = {
        "matchers": [{"name": "rule", "op": "=", "value": "Nightly job"}],
        "starts_at": (utcnow() + timedelta(hours=3)).isoformat(),
        "ends_at": (utcnow() + timedelta(hours=5)).isoformat(),
        "comment": "tonight's maintenance, called off",
    }
    silence = client.post(f"{MONITORING}/silences", json=body, headers=tenant.headers).json()
    url = f"{MONITORING}/silences/{silence['id']}"
    for _ in range(2):
        assert client.delete(url, headers=tenant.headers).json()["active"] is False
    assert client.get(f"{MONITORING}/silences", headers=tenant.headers).json() == []
    expired = [e for e in audit_of("alert.silenced") if e.action == "silence.expired"]
    assert len(expired) == 1
