"""The operations stack's configuration under deploy/, checked against the tools that read it
(promtool, amtool) or, where no binary is available here (the OpenTelemetry collector,
Grafana), parsed and checked for the keys they need and against compose.yaml's wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.monitoring import ROOT, require_binary

DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "herald.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
COLLECTOR_CONFIG = DEPLOY / "otel-collector" / "config.yaml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "herald.json"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return dict(_yaml(ROOT / "compose.yaml"))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("./"):
            out[container] = host
    return out


def _herald_services() -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in _compose()["services"].items() if s.get("image") == "herald:latest"
    }


def test_prometheus_config_is_valid_and_loads_the_herald_rule_file(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    config = _yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["rules/herald.yml"]
    # promtool checks that the token file exists: the one compose mounts as a secret is
    # replaced by a local one, in a copy of deploy/prometheus (rule files included).
    local = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_CONFIG.parent, local)
    token = tmp_path / "metrics_token"
    token.write_text("test-token")
    text = PROMETHEUS_CONFIG.read_text().replace("/run/secrets/metrics_token", str(token))
    (local / PROMETHEUS_CONFIG.name).write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", str(local / PROMETHEUS_CONFIG.name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prometheus = _compose()["services"]["prometheus"]
    assert _mounts(prometheus)["/etc/prometheus"] == "./deploy/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_prometheus_scrapes_the_api_and_every_process_that_serves_metrics() -> None:
    targets = {
        target: job
        for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {}
    for name, service in _herald_services().items():
        port = (service.get("environment") or {}).get("HERALD_METRICS_PORT")
        if port:
            expected[f"{name}:{port}"] = service
    api_port = _herald_services()["api"]["command"][-1]
    expected[f"api:{api_port}"] = _herald_services()["api"]
    assert set(expected) <= set(targets), set(expected) - set(targets)
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for target in expected:
        job = jobs[targets[target]["job_name"]]
        # The metrics token reaches Prometheus as the compose secret it reads.
        assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in _compose()["services"]["prometheus"]["secrets"]
    assert _compose()["secrets"]["metrics_token"] == {"environment": "HERALD_METRICS_TOKEN"}
    assert jobs["herald-api"]["metrics_path"] == "/metrics"
    assert "otel-collector:8889" in targets


def test_alertmanager_config_is_valid() -> None:
    amtool = require_binary("amtool", "apt-get install prometheus-alertmanager")
    assert _mounts(_compose()["services"]["alertmanager"])["/etc/alertmanager"] == (
        "./deploy/alertmanager"
    )
    if not ALERTMANAGER_CONFIG.exists():
        pytest.skip("deploy/alertmanager/ is written by the alerting work; not here yet")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_collector_receives_otlp_sends_traces_to_jaeger_and_metrics_to_prometheus() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():  # every component a pipeline names is defined
        assert set(pipeline["receivers"]) <= set(config["receivers"])
        assert set(pipeline.get("processors", [])) <= set(config["processors"])
        assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))
    (traces_to,) = pipelines["traces"]["exporters"]
    assert traces_to.split("/")[0] == "otlp"
    assert config["exporters"][traces_to]["endpoint"] == "jaeger:4317"
    assert _compose()["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    (metrics_to,) = pipelines["metrics"]["exporters"]
    exporter = config["exporters"][metrics_to]
    assert metrics_to == "prometheus"
    assert exporter["endpoint"].endswith(":8889")
    assert exporter["namespace"] == "otel"  # never the same names as the direct scrape
    collector = _compose()["services"]["otel-collector"]
    (config_arg,) = collector["command"]
    assert _mounts(collector)[config_arg.removeprefix("--config=")] == (
        "./deploy/otel-collector/config.yaml"
    )
    for service in _herald_services().values():
        endpoint = service["environment"]["HERALD_OTLP_ENDPOINT"]
        assert endpoint.endswith("http://otel-collector:4318}")


def test_grafana_provisions_prometheus_and_the_herald_dashboard() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "herald.yml")
    assert sources["apiVersion"] == 1
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["prometheus"]["isDefault"] is True
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"

    providers = _yaml(GRAFANA / "provisioning" / "dashboards" / "herald.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the Herald dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_well_formed_and_uses_only_defined_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "herald-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["provider"]["allValue"] == ".*"
    builtins = {"__rate_interval", "__interval", "__range"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= set(variables) | builtins, (panel["title"], used)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("publish", "latency", "delay", "queue", "worker", "token", "alert"):
        assert topic in titles
    assert len(dashboard_expressions()) >= 20
