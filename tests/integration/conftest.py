"""Fixtures shared by the integration tests: a PostgreSQL journal (`tests.unit.journal_backends`)."""

from ..unit.journal_backends import postgres_url  # noqa: F401
