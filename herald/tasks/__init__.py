"""Celery tasks. Public task names are a contract with other services (see the README)."""
