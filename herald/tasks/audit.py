"""Audit tasks.

| task                        | queue  | payload     |
| --------------------------- | ------ | ----------- |
| ``herald.audit.verify_chain`` | alerts | none (beat) |

``verify_chain`` walks the hash chain and records the result (``audit_verifications``), which
the "Audit chain broken" alert rule reads.
"""

from __future__ import annotations

from typing import Any

from herald.celery_app import app
from herald.contracts import NoArguments
from herald.db import service_scope
from herald.security.audit import verify_and_record
from herald.tasks.base import HeraldTask


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.audit.verify_chain",
    scope="service",
    payload_model=NoArguments,
    periodic=True,
)
def verify_chain(self: HeraldTask, payload: NoArguments) -> dict[str, Any]:
    service_scope(self.session, "audit.verify_chain")
    report = verify_and_record(self.session)
    return {"ok": report.ok, "checked": report.checked, "first_break": report.first_break}
