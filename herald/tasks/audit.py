"""Audit tasks: thin Celery bindings of :mod:`herald.security`.

| task                                | queue  | payload     |
| ----------------------------------- | ------ | ----------- |
| ``herald.audit.verify_chain``         | alerts | none (beat) |
| ``herald.audit.checkpoint``           | alerts | none (beat) |
| ``herald.security.detect_suspicious`` | alerts | none (beat) |

``verify_chain`` walks the hash chain against the signed checkpoints and records the result
(``audit_verifications``), which the "Audit chain broken" alert rule reads. ``checkpoint``
signs the chain head into ``HERALD_AUDIT_CHECKPOINT_DIR`` (skipped, with a log line, when no
directory or key is configured). ``detect_suspicious`` turns patterns in recent audit events
into findings (see :mod:`herald.security.suspicious`).
"""

from __future__ import annotations

from typing import Any

import structlog

from herald.celery_app import app
from herald.contracts import NoArguments
from herald.db import service_scope
from herald.security import checkpoints, suspicious
from herald.security.audit_verify import verify_and_record
from herald.settings import get_settings
from herald.tasks.base import HeraldTask

log = structlog.get_logger("herald.audit")


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
    report = verify_and_record(self.session, get_settings())
    return {"ok": report.ok, "checked": report.checked, "first_break": report.first_break}


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.audit.checkpoint",
    payload_model=NoArguments,
    periodic=True,
    scope="service",
)
def checkpoint(self: HeraldTask, payload: NoArguments) -> dict[str, Any]:
    settings = get_settings()
    if not settings.audit_checkpoint_dir or settings.audit_signing_key is None:
        log.warning("audit.checkpoint_skipped", reason="no checkpoint directory or signing key")
        return {"written": None}
    service_scope(self.session, "audit.checkpoint")
    written = checkpoints.write(self.session, settings)
    return {"written": written.name, "sequence": written.sequence}


@app.task(
    bind=True,
    base=HeraldTask,
    name="herald.security.detect_suspicious",
    payload_model=NoArguments,
    periodic=True,
    scope="service",
)
def detect_suspicious(self: HeraldTask, payload: NoArguments) -> dict[str, Any]:
    service_scope(self.session, "security.detect_suspicious")
    found = suspicious.detect(self.session, get_settings())
    return {"findings": len(found), "kinds": sorted({f.kind for f in found})}
