"""The journal in PostgreSQL, for runners on several machines: ``--journal postgresql://...``.

Same tables, rules and tests as the SQLite file (the logic is `SqlJournal`'s); what differs is
how writers are kept apart. SQLite locks the whole file per transaction; here a transaction
locks the rows it reads (``FOR UPDATE``), and a claim passes over rows another runner is
claiming at that moment (``FOR UPDATE SKIP LOCKED``), so runners never wait on each other's
claims and never take the same item. New keys are inserted with ``ON CONFLICT DO NOTHING``: of
two runners adding one key, one gets it. Every transaction that queues items sends ``NOTIFY
parapipe_journal`` with the run's name, which wakes followers (`wait_for_items`) at once.

Needs psycopg 3: ``pip install 'parapipe[postgres]'``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError, JournalError
from .base import translated
from .codec import DEFAULT_MAX_RESULT_BYTES
from .sql import SqlJournal, schema
from .store import DEFAULT_LEASE

try:
    import psycopg
except ImportError as exc:  # the optional extra
    raise ConfigError(
        f"a postgresql:// journal needs psycopg 3 ({exc}); install it with: pip install 'parapipe[postgres]'"
    ) from exc

__all__ = ["CHANNEL", "PostgresJournal"]

CHANNEL = "parapipe_journal"
"""The NOTIFY channel; the payload is the run's name."""

_SCHEMA = schema(serial="BIGSERIAL", real="DOUBLE PRECISION", blob="BYTEA")

# Two runners creating the tables at once would race on the catalog: one holds this lock.
_SCHEMA_LOCK = 0x70617261  # "para"


class PostgresJournal(SqlJournal):
    """A `JobStore` in a PostgreSQL database (the tables are created when missing).

    Args:
        url: a libpq connection string, e.g. ``postgresql://user@host/db``.
        run, clock, max_result_bytes, owner, lease: as for `Journal`.
    """

    placeholder = "%s"
    in_chunk = 10_000
    lock_rows = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        run: str = "default",
        clock: Callable[[], float] = time.time,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        owner: str | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        super().__init__(run=run, clock=clock, max_result_bytes=max_result_bytes, owner=owner, lease=lease)
        self.path = url
        self._conn: psycopg.Connection[Any] | None = self._connect()
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()

    def close(self) -> None:
        """Close the connections. Idempotent; any later call raises `JournalError`."""
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    conn.close()
            self._conn = self._listener = None

    def wait_for_items(self, timeout: float) -> None:
        """Return when items may have been queued in this run (a NOTIFY), or after ``timeout``."""
        with self._listen_lock, translated(self.path, psycopg.Error):
            if self._listener is None:
                self._listener = psycopg.connect(self.path, autocommit=True)
                self._listener.execute(f"LISTEN {CHANNEL}")
            for note in self._listener.notifies(timeout=timeout):
                if note.payload == self.run:
                    return

    def _connect(self) -> psycopg.Connection[Any]:
        with translated(self.path, psycopg.Error):
            conn = psycopg.connect(self.path)
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for statement in _SCHEMA:
                        conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            return conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, translated(self.path, psycopg.Error):
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._transaction() as cur:
            yield cur

    def _insert(self, cur: Any, rows: list[tuple[Any, ...]], running: bool) -> set[str]:
        keys = [row[1] for row in rows]
        kinds = [row[3] for row in rows]
        payloads = [row[4] for row in rows]
        now = rows[0][2]
        state, attempts, started = ("running", 1, now) if running else ("queued", 0, None)
        owner, lease = (self.owner, now + self.lease) if running else (None, None)
        cur.execute(
            "INSERT INTO items (run, key, state, attempts, created, started, owner, lease_until, payload_kind, payload)"
            " SELECT %s, k, %s, %s, %s, %s, %s, %s, pk, p"
            " FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS t(k, pk, p)"
            " ON CONFLICT (run, key) DO NOTHING RETURNING key",
            (self.run, state, attempts, now, started, owner, lease, keys, kinds, payloads),
        )
        return {key for (key,) in cur.fetchall()}

    def _in(self, keys: list[str]) -> tuple[str, list[Any]]:
        return "key = ANY(%s)", [keys]

    def _param(self, value: str | bytes | None) -> Any:
        return value.encode() if isinstance(value, str) else value

    def _notify(self, cur: Any) -> None:
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.run))

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn
