"""Fixtures shared across integration folders: the alert tests' real HTTP receiver on
loopback, which integrators' webhook deliveries go to as well."""

from tests.integration.alerts.conftest import receiver

__all__ = ["receiver"]
