"""Herald's Alertmanager receiver against a real Alertmanager (Debian's
``prometheus-alertmanager``), started by the test on a free port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herald.settings import AlertReceiver
from tests.fixtures.external import binary, free_port
from tests.fixtures.polling import eventually
from tests.integration.alerts.conftest import (
    add_rule,
    alerts_of,
    errors_at,
    evaluate,
    notify,
    receiver_settings,
)

pytestmark = pytest.mark.usefixtures("alerting")

CONFIG = """\
route:
  receiver: nowhere
receivers:
  - name: nowhere
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    program = binary("prometheus-alertmanager", "prometheus-alertmanager")
    (tmp_path / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            program,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError((tmp_path / "alertmanager.log").read_text()[-2000:])
        try:
            return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(ready, what="Alertmanager to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_alertmanager_receives_firing_then_resolved_alerts(alertmanager: str) -> None:
    settings = receiver_settings(
        am=AlertReceiver.model_validate(
            {"type": "alertmanager", "url": alertmanager, "group_wait_s": 0, "group_interval_s": 0}
        )
    )
    rule = add_rule(name="Failed jobs spike", severity="error", labels={"team": "ops"})
    errors_at(0, 5)
    evaluate(settings, 0)
    assert notify(settings, 0).sent == 1
    [alert] = alerts_of(rule)
    active = httpx.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"}).json()
    [received] = [a for a in active if a["labels"].get("alertname") == "Failed jobs spike"]
    assert received["labels"]["severity"] == "error"
    assert received["labels"]["team"] == "ops"
    assert received["status"]["state"] == "active"
    assert "test.errors" in received["annotations"]["summary"]
    assert alert.fingerprint  # Herald's identity; Alertmanager computes its own from labels
    evaluate(settings, 1)  # resolves
    assert notify(settings, 1).sent == 1
    remaining = httpx.get(f"{alertmanager}/api/v2/alerts").json()
    assert [a for a in remaining if a["labels"].get("alertname") == "Failed jobs spike"] == []
