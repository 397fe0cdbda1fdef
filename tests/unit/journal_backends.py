"""Fixtures that run a journal test on every backend; import them into a test module.

PostgreSQL runs where ``PARAPIPE_TEST_POSTGRES`` is a server's URL (``.ci/postgres`` starts a
throwaway one, and ``.ci/run`` exports it); each test gets a schema of its own, dropped after.
Elsewhere the PostgreSQL cases are skipped, and the reason says how to run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from parapipe.journal import Journal, open_journal

__all__ = ["journal_target", "make", "postgres_url", "sqlite_journal"]

_NO_SERVER = (
    "no PostgreSQL server for the journal tests: set PARAPIPE_TEST_POSTGRES=postgresql://... "
    "(.ci/postgres DIR starts a throwaway one and prints its URL)"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose ``search_path`` is a fresh schema, dropped after the test."""
    base = os.environ.get("PARAPIPE_TEST_POSTGRES")
    if not base:
        pytest.skip(_NO_SERVER)
    psycopg = pytest.importorskip("psycopg", reason="pip install 'parapipe[postgres]' for the PostgreSQL journal")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def journal_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a journal lives: a SQLite file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "run.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make(journal_target: str) -> Callable[..., Any]:
    """Opens a journal object on the test's database (``open_journal``'s keyword arguments)."""
    return lambda **options: open_journal(journal_target, **options)


@pytest.fixture
def sqlite_journal(tmp_path: Path) -> Iterator[Journal]:
    """A journal in ``tmp_path / "run.db"``, for tests that read the file itself."""
    with Journal(tmp_path / "run.db") as journal:
        yield journal
