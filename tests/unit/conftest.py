"""Fixtures shared by the unit tests: the journal backends (`journal_backends`)."""

from .journal_backends import journal_target, make, postgres_url, sqlite_journal  # noqa: F401
