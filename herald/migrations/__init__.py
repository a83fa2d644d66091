"""Alembic migrations, run with ``herald db upgrade`` (see :mod:`herald.migrations.runner`)."""
