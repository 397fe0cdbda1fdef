"""The journal in one SQLite file: the default, for runners on one machine.

Why SQLite in WAL mode: it ships with Python; every transaction is atomic, so a killed process
cannot half-write one (the WAL is replayed on the next open); readers (the CLI, the service's
pages) never block the writer; and ``BEGIN IMMEDIATE`` takes the file's write lock before the
first read, so a claim's check and its update cannot interleave with another process's.
``synchronous=NORMAL`` keeps commits safe against a process crash, which is what we guard
against, without an fsync per commit; only a power cut can lose the last few commits, and
those items just run again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import JournalError
from .base import translated
from .codec import DEFAULT_MAX_RESULT_BYTES
from .sql import SqlJournal, schema
from .store import DEFAULT_LEASE

__all__ = ["Journal"]

# Bumped when the tables change; a file from a newer parapipe is refused, never rewritten.
# 2: leases (owner, lease_until), and the attempts table keeps only earlier attempts.
_SCHEMA_VERSION = 2

_SCHEMA = schema(serial="INTEGER", real="REAL", blob="BLOB")

_FROM_V1 = [
    "ALTER TABLE items ADD COLUMN owner TEXT",
    "ALTER TABLE items ADD COLUMN lease_until REAL",
    # v1 logged every attempt, the latest too; v2 keeps the latest in the item's row only.
    "DELETE FROM attempts WHERE (run, key, attempt) IN (SELECT run, key, attempts FROM items)",
]


class Journal(SqlJournal):
    """A `JobStore` in one SQLite file, safe to share between the threads of a process and
    between processes (runners) on one machine.

    Args:
        path: the database file; created with its tables when missing.
        run: the namespace this object reads and writes; other runs in the file are untouched.
        clock: gives the ``created`` / ``started`` / ``finished`` / lease times (inject one in tests).
        max_result_bytes: results whose encoding is larger are not stored (see `Record`);
            None stores every result.
        busy_timeout: seconds to wait for another process's write lock before failing.
        owner: this runner's name in leases (default: host, pid and a random token).
        lease: seconds a claim lasts unless renewed.
    """

    in_chunk = 10_000 if sqlite3.sqlite_version_info >= (3, 32) else 500

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run: str = "default",
        clock: Callable[[], float] = time.time,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        busy_timeout: float = 30.0,
        owner: str | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        super().__init__(run=run, clock=clock, max_result_bytes=max_result_bytes, owner=owner, lease=lease)
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = _connect(self.path, busy_timeout)

    def close(self) -> None:
        """Close the file. Idempotent; any later call raises `JournalError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def prune(self, finished_before: float) -> list[str]:
        """`SqlJournal.prune`, then the freed pages go back to the file system when they are
        more than half the file."""
        keys = super().prune(finished_before)
        with self._lock, translated(self.path, sqlite3.Error):
            conn = self._connection()
            free, total = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
            if self.path != ":memory:" and free * 2 > total:
                conn.execute("VACUUM")
        return keys

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, translated(self.path, sqlite3.Error):
            conn = self._connection()
            _begin(conn, time.monotonic() + self._busy_timeout)
            try:
                yield conn.cursor()
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, translated(self.path, sqlite3.Error):
            yield self._connection().cursor()

    def _insert(self, cur: Any, rows: list[tuple[Any, ...]], running: bool) -> set[str]:
        # Under BEGIN IMMEDIATE no other process can have added these keys since we looked.
        if running:
            now = rows[0][2]
            cur.executemany(
                "INSERT INTO items (run, key, state, attempts, created, started, payload_kind, payload, owner,"
                " lease_until) VALUES (?, ?, 'running', 1, ?, ?, ?, ?, ?, ?)",
                [(run, key, at, at, kind, data, self.owner, now + self.lease) for run, key, at, kind, data in rows],
            )
        else:
            cur.executemany(
                "INSERT INTO items (run, key, state, created, payload_kind, payload) VALUES (?, ?, 'queued', ?, ?, ?)",
                rows,
            )
        return {row[1] for row in rows}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open the file, switch it to WAL and make sure the tables exist and are ours."""
    if path != ":memory:" and not path.startswith("file:"):
        # Created owner-only (SQLite gives its -wal and -shm files the same mode): items and
        # results are the users' data.
        with translated(path, sqlite3.Error), contextlib.suppress(FileNotFoundError, PermissionError):
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
    # isolation_level=None: we issue BEGIN ourselves, so each method is exactly one transaction.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        with translated(path, sqlite3.Error):
            _set_up(conn, path, time.monotonic() + busy_timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def _begin(conn: sqlite3.Connection, deadline: float) -> None:
    """BEGIN IMMEDIATE, waited for: SQLite's busy handler covers a lock held by another writer,
    but a process killed mid-write leaves a WAL whose recovery answers "locked" at once."""
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _set_up(conn: sqlite3.Connection, path: str, deadline: float) -> None:
    """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock that SQLite
    answers "database is locked" at once, without its busy handler, when another runner opens
    the same new file at the same moment: that is retried until the busy timeout."""
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _create_schema(conn, path)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)  # another process holds the lock for a moment: wait, as busy_timeout would


def _create_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise JournalError(
                f"{path} has journal schema {version}, newer than this parapipe's "
                f"({_SCHEMA_VERSION}); upgrade parapipe to read it"
            )
        if version == 1:
            for statement in _FROM_V1:
                conn.execute(statement)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
