"""Herald's own OAuth client credentials, checked where the operator will see it: at start.

A network's refresh sends Herald's client id (and secret) along with the user's refresh
token. Without them the network answers ``invalid_client`` — Herald's configuration error,
never the user's. One gap in ``HERALD_PROVIDER_CREDENTIALS`` must not disconnect every account
of a network, so a worker refuses that provider loudly when it starts (an ERROR line per
provider in use, naming what is missing, and a count in
``herald.provider.configuration_errors``), and every refresh for it is refused before any
call (:mod:`herald.tokens.refresh`): its integrations keep their status and their posts wait.
Other providers carry on.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald.db import service_scope, session_scope
from herald.models import Integration, IntegrationStatus
from herald.providers.registry import UnknownProvider, missing_client_credentials
from herald.settings import Settings
from herald.telemetry import metrics

log = structlog.get_logger("herald.tokens")


def providers_in_use(session: Session) -> set[str]:
    """Every network with an integration that is not disabled."""
    rows = session.scalars(
        select(Integration.provider)
        .where(Integration.status != IntegrationStatus.DISABLED)
        .distinct()
    )
    return set(rows)


def missing_clients(session: Session, settings: Settings) -> dict[str, tuple[str, ...]]:
    """The providers in use whose refresh lacks client credentials, with what is missing."""
    gaps: dict[str, tuple[str, ...]] = {}
    for provider in sorted(providers_in_use(session)):
        try:
            missing = missing_client_credentials(settings, provider)
        except UnknownProvider:
            continue  # no adapter: its posts fail clearly elsewhere
        if missing:
            gaps[provider] = missing
    return gaps


def check_at_start(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Log (ERROR) and count each provider in use that Herald cannot refresh for; returns
    them. A database that is not reachable yet is reported and skipped, not fatal."""
    try:
        with session_scope() as session:
            service_scope(session, "provider_client_check")
            gaps = missing_clients(session, settings)
    except SQLAlchemyError as exc:
        log.warning("provider.client_check_skipped", error_type=type(exc).__name__)
        return {}
    for provider, missing in gaps.items():
        metrics.provider_configuration_errors.add(
            1, {"provider": provider, "code": "missing_client_credentials"}
        )
        log.error(
            "provider.client_credentials_missing",
            provider=provider,
            missing=list(missing),
            setting="HERALD_PROVIDER_CREDENTIALS",
            consequence=(
                f"refreshes of {provider} tokens are refused until this is set; its "
                "integrations keep their status and their posts wait"
            ),
        )
    return gaps
