"""Who submitted each job: jobs belong to the API key that submitted them.

A key is never stored: its owner id is a hash of it (`owner_id`). The table lives in the job
journal's file, beside the journal's own tables and with its own connection, so ownership is as
durable as the jobs; with an in-memory journal it is a dict. Admin keys (configured apart) see
every job, and so does everyone when the server has no keys at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading

__all__ = ["Owners", "owner_id"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS parapipe_job_owners (key TEXT PRIMARY KEY, owner TEXT NOT NULL)"


def owner_id(api_key: str | None) -> str:
    """The stored owner of a key's jobs ("" without a key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32] if api_key else ""


class Owners:
    """The owner of each job key, kept in ``path`` (``":memory:"``: in this process only)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._memory: dict[str, str] | None = {} if path == ":memory:" else None
        self._conn: sqlite3.Connection | None = None
        if self._memory is None:
            self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute(_SCHEMA)

    def set(self, key: str, owner: str) -> None:
        with self._lock:
            if self._memory is not None:
                self._memory[key] = owner
            elif self._conn is not None:
                self._conn.execute("INSERT OR REPLACE INTO parapipe_job_owners VALUES (?, ?)", (key, owner))

    def owner_of(self, key: str) -> str | None:
        with self._lock:
            if self._memory is not None:
                return self._memory.get(key)
            assert self._conn is not None
            row = self._conn.execute("SELECT owner FROM parapipe_job_owners WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

    def keys(self, owner: str) -> list[str]:
        """The owner's job keys, in submission order."""
        with self._lock:
            if self._memory is not None:
                return [k for k, o in self._memory.items() if o == owner]
            assert self._conn is not None
            rows = self._conn.execute("SELECT key FROM parapipe_job_owners WHERE owner = ? ORDER BY rowid", (owner,))
            return [str(r[0]) for r in rows]

    def forget(self, keys: list[str]) -> None:
        with self._lock:
            if self._memory is not None:
                for key in keys:
                    self._memory.pop(key, None)
            elif self._conn is not None and keys:
                self._conn.executemany("DELETE FROM parapipe_job_owners WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
