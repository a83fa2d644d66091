"""The whole API against its own OpenAPI document, with schemathesis: every operation, data
that fits the schema and data that does not, an authenticated caller with real rows to find.
No answer is a 5xx, and every answer (status, content type, body, headers) is one the document
declares. Each case is sent again by a caller without a valid token, who never gets data.
Bounded: a fixed seed (the suite's derandomized hypothesis profile) and a few dozen
examples per operation; ``make fuzz`` runs it with fresh random data and more examples."""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import timedelta

import hypothesis
import pytest
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from herald.api import create_app
from herald.models import PostStatus, utcnow
from herald.settings import get_settings
from tests.integration.api.conftest import Tenant, bearer, mint

# Bounded: the suite has a 12-minute budget (12, fixed seed). `make fuzz` asks for more examples
# and fresh random data each run.
EXAMPLES_PER_OPERATION = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "12"))
FRESH_DATA = os.environ.get("HERALD_FUZZ_RANDOM") == "1"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # schemathesis' lazy parametrisation runs a single operation in an xdist worker and passes.
    pytest.fail("run this module without pytest-xdist (-p no:xdist), as make test does")


# Loaded when the module is collected: building the app and its document needs no database.
schema = schemathesis.openapi.from_asgi("/api/postiz/openapi.json", create_app(get_settings()))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=not FRESH_DATA,
    # The token is the test's to give (valid, or one of the bad callers below), not generated.
    with_security_parameters=False,
)
# The tenant and its rows are made once per operation, not per example: that is intended.
FIXTURES_PER_OPERATION = [hypothesis.HealthCheck.function_scoped_fixture]


@pytest.fixture
def known_posts(tenant: Tenant) -> list[uuid.UUID]:
    """Posts the generated cases can find, in statuses every post operation treats apart."""
    statuses = (PostStatus.SCHEDULED, PostStatus.FAILED, PostStatus.PUBLISHED)
    return [tenant.post(status=status).id for status in statuses]


def _positive(case: Case, location: ParameterLocation) -> bool:
    meta = case.meta
    if meta is None:
        return False
    component = meta.components.get(location)
    return (component.mode if component else meta.generation.mode).is_positive


def aim_at_real_rows(case: Case, tenant: Tenant, known_posts: list[uuid.UUID]) -> None:
    """Make the parts of a case that fit the schema meet real rows, so the operations get past
    "not found": the tenant's workspace, and for about half the cases (decided by the
    generated id itself, so deterministic) a known post, or the tenant's integration with a
    time the scheduler accepts. Parts generated to violate the schema are left as they are."""
    if _positive(case, ParameterLocation.HEADER):
        case.headers = {**(case.headers or {}), "X-Workspace-ID": str(tenant.workspace.id)}
    post_id = (case.path_parameters or {}).get("post_id")
    if (
        _positive(case, ParameterLocation.PATH)
        and isinstance(post_id, str)
        and post_id[:1] in "01234567"
    ):
        aimed = str(known_posts[int(post_id[0]) % len(known_posts)])
        case.path_parameters = {**(case.path_parameters or {}), "post_id": aimed}
    body = case.body
    if (
        _positive(case, ParameterLocation.BODY)
        and isinstance(body, dict)
        and isinstance(body.get("integration_id"), str)
        and body["integration_id"][:1] in "01234567"
    ):
        soon = (utcnow() + timedelta(hours=1)).isoformat()
        case.body = {**body, "integration_id": str(tenant.integration.id), "scheduled_at": soon}


def schema_valid_input_is_never_a_validation_failure(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """A business rule may refuse a schema-valid request (a time too far in the past, content
    over a network's limit), but never as ``validation_failed``: a constraint the server checks
    on the shape of the input belongs in the document. (Stands in for schemathesis'
    ``positive_data_acceptance``, which cannot tell a rule from a shape.)"""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json()["error"]
    assert error["code"] != "validation_failed", f"schema-valid input refused: {error['details']}"
    return None


def no_server_error_but_a_documented_one(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """No 5xx, except one the operation documents (health and readiness answer 503 when what
    they report on is down: on this machine no worker consumes the queues)."""
    if response.status_code >= 500:
        documented = case.operation.definition.raw.get("responses", {})
        assert str(response.status_code) in documented, f"undocumented {response.status_code}"
    return None


# Probes and the Prometheus exposition answer without a token (/metrics wants the metrics
# token when HERALD_METRICS_TOKEN is set, which the test run leaves unset).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def bad_callers() -> dict[str, dict[str, str]]:
    return {
        "no token": {},
        "expired token": {"Authorization": f"Bearer {mint(expires_in=-120)}"},
        "admin role": {"Authorization": f"Bearer {mint(role='admin')}"},
    }


#: Which bad caller sends a generated case after the tenant has: each in turn, so every
#: operation meets all three over its cases (the order of the cases is fixed: deterministic).
_CALLER_TURNS = itertools.cycle(sorted(bad_callers()))


@schema.parametrize()
@hypothesis.settings(suppress_health_check=FIXTURES_PER_OPERATION, derandomize=not FRESH_DATA)
def test_every_operation_answers_within_its_schema_and_only_to_a_valid_token(
    case: Case, tenant: Tenant, known_posts: list[uuid.UUID]
) -> None:
    """Each generated case (bodies that fit the document and bodies that do not) is sent by
    the tenant, and then by a caller without a valid token, who never gets data: the token is
    checked before the body."""
    aim_at_real_rows(case, tenant, known_posts)

    case.call_and_validate(
        headers={"Authorization": tenant.headers["Authorization"]},
        excluded_checks=[positive_data_acceptance, not_a_server_error],
        additional_checks=[
            schema_valid_input_is_never_a_validation_failure,
            no_server_error_but_a_documented_one,
        ],
    )
    if case.operation.path not in OPEN_PATHS:  # these need no authentication
        caller = next(_CALLER_TURNS)
        refused_without_a_valid_token(case, tenant, caller, bad_callers()[caller])


def refused_without_a_valid_token(
    case: Case, tenant: Tenant, caller: str, headers: dict[str, str]
) -> None:
    headers["X-Workspace-ID"] = str(tenant.workspace.id)

    response = case.call_and_validate(headers=headers)

    if response.request.method == "OPTIONS":
        return  # schemathesis probing the methods: answered with Allow, no data
    assert response.status_code >= 400, (caller, response.text)
    sent = response.request.headers.get("Authorization")
    if "Authorization" in headers and sent == headers["Authorization"]:
        # Unless the body could not even be read, the token decides: 401, or 403 for a
        # genuine token of a role that is not accepted.
        # The cron endpoint takes the cron secret, not a JWT: any token is a 401 there.
        cron = "/cron/" in case.operation.path
        refusal = 403 if caller == "admin role" and not cron else 401
        assert response.status_code in (refusal, 400, 405, 413, 415), (caller, response.text)


def test_a_foreign_workspace_gets_a_documented_refusal(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    headers = bearer(mint(tenant.user_id), other_tenant.workspace.id)
    operation = schema["/api/postiz/posts"]["GET"]

    response = operation.Case().call_and_validate(headers=headers)

    assert response.status_code == 404
