"""The reading half of `SqlJournal`, and what a backend provides: connection hooks, the
placeholders and locks its SQL spells differently, and the queries every method shares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from ..errors import JournalError
from . import codec
from .codec import COLUMNS, Record, State
from .store import new_owner

__all__ = ["SqlBase", "translated"]

_Self = TypeVar("_Self", bound="SqlBase")


@contextmanager
def translated(where: str, errors: type[Exception] | tuple[type[Exception], ...]) -> Iterator[None]:
    """Raise a database driver's ``errors`` (locked, refused, lost, disk full) as `JournalError`
    naming the journal ``where``, so callers see one error type whatever the backend."""
    try:
        yield
    except errors as exc:
        raise JournalError(f"journal {where}: {exc}") from exc


class SqlBase:
    """Reads and backend hooks of a journal in SQL, safe to share between the threads of a
    process (see the package docstring for the states and the guarantees); `SqlJournal` adds
    the writes, and subclasses open the database."""

    path: str
    placeholder = "?"
    in_chunk = 500
    """Keys per ``IN (...)``: SQLite before 3.32 allows at most 999 host parameters."""
    lock_rows = ""
    """Appended to a SELECT in a write transaction to lock the rows it reads (PostgreSQL)."""
    skip_locked = ""
    """Appended to a claim's SELECT so that rows another runner is claiming are passed over."""

    def __init__(
        self,
        *,
        run: str,
        clock: Callable[[], float],
        max_result_bytes: int | None,
        owner: str | None,
        lease: float,
    ) -> None:
        if lease <= 0:
            raise JournalError(f"lease must be > 0 seconds, got {lease}")
        self.run = run
        self.owner = owner or new_owner()
        self.lease = float(lease)
        self._clock = clock
        self._max_result_bytes = max_result_bytes
        # One connection for all threads: the database serialises writers anyway, and a lock
        # held around each transaction is simpler than a connection per thread to close.
        self._lock = threading.Lock()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, run={self.run!r})"

    # -- what a backend provides -----------------------------------------------------------

    def close(self) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        """A write transaction (under ``self._lock``) yielding a cursor."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        """A cursor for reads (under ``self._lock``)."""
        raise NotImplementedError

    def _insert(self, cur: Any, rows: list[tuple[Any, ...]], running: bool) -> set[str]:
        """Insert ``(run, key, created, payload_kind, payload)`` rows, queued or running under
        this runner's lease; a key that appeared meanwhile is left alone. Returns the keys
        inserted."""
        raise NotImplementedError

    def _param(self, value: str | bytes | None) -> Any:
        """A blob as the driver stores it."""
        return value

    def _notify(self, cur: Any) -> None:
        """Tell followers that items were queued (PostgreSQL: NOTIFY)."""

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The item's record, or None when the key was never added to this run."""
        rows = self._select("key = ?", (key,))
        return rows[0] if rows else None

    def lookup(self, keys: Sequence[str]) -> dict[str, Record]:
        """The records of those keys that are in this run (one indexed query per 10,000 keys)."""
        with self._reading() as cur:
            return {key: codec.record(row) for key, row in self._select_keys(cur, list(keys), COLUMNS, "").items()}

    def pending(self, *, include_failed: bool = False) -> list[Record]:
        """What a resume must run, in insertion order: queued and running (interrupted) items.

        A failed item stays failed, whatever failed it: it already had its retries. With
        ``include_failed`` the failed items are included too (a resume asked to retry them).
        """
        states = "('queued', 'running', 'failed')" if include_failed else "('queued', 'running')"
        return self._select(f"state IN {states}", ())

    def counts(self) -> dict[State, int]:
        """How many items of the run are in each state (every state present, zero or not)."""
        rows = self._query("SELECT state, COUNT(*) FROM items WHERE run = ? GROUP BY state", (self.run,))
        found = {State(state): n for state, n in rows}
        return {state: found.get(state, 0) for state in State}

    def records(self, state: State | None = None, *, offset: int = 0, limit: int | None = 100) -> list[Record]:
        """One page of the run's items in insertion order, optionally of one state only.

        ``limit=None`` returns everything from ``offset`` on.
        """
        if offset < 0 or (limit is not None and limit < 0):
            raise JournalError(f"offset and limit must be >= 0, got {offset} and {limit}")
        if state is None:
            return self._select("1 = 1", (), limit=limit, offset=offset)
        return self._select("state = ?", (State(state).value,), limit=limit, offset=offset)

    def attempt_log(self, key: str) -> list[dict[str, Any]]:
        """Every attempt at the item, oldest first, for showing retries (empty if unknown).

        Each entry has ``attempt``, ``state`` (a `State` value or ``"interrupted"`` when the
        process died mid-attempt), ``error``, ``started`` and ``finished``.
        """
        rows = self._query(
            "SELECT attempt, state, error, started, finished FROM attempts WHERE run = ? AND key = ? ORDER BY attempt",
            (self.run, key),
        )
        log = [
            {"attempt": a, "state": s, "error": codec.loads_error(e), "started": t0, "finished": t1}
            for a, s, e, t0, t1 in rows
        ]
        rec = self.get(key)
        if rec is not None and rec.attempts > 0 and all(e["attempt"] != rec.attempts for e in log):
            log.append(
                {"attempt": rec.attempts, "state": rec.state.value, "error": rec.error,
                 "started": rec.started, "finished": rec.finished}
            )  # fmt: skip
        return log

    def runs(self) -> list[str]:
        """The names of every run with items in this database, oldest first."""
        rows = self._query("SELECT run FROM items GROUP BY run ORDER BY MIN(seq)", ())
        return [run for (run,) in rows]

    def _blob(self, value: codec.Blob | None) -> tuple[str | None, Any]:
        kind, data = codec.columns(value)
        return kind, self._param(data)

    def _select_keys(self, cur: Any, keys: list[str], columns: str, suffix: str) -> dict[str, tuple[Any, ...]]:
        """Rows of the given keys (first column: the key), ``suffix`` appended (a lock)."""
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(keys), self.in_chunk):
            chunk = keys[start : start + self.in_chunk]
            where, params = self._in(chunk)
            sql = f"SELECT {columns} FROM items WHERE run = ? AND {where}{suffix}"
            cur.execute(self._sql(sql), (self.run, *params))
            found.update((row[0], row) for row in cur.fetchall())
        return found

    def _in(self, keys: list[str]) -> tuple[str, list[Any]]:
        return f"key IN ({', '.join('?' * len(keys))})", list(keys)

    def _select(
        self, where: str, params: tuple[Any, ...], *, limit: int | None = None, offset: int = 0
    ) -> list[Record]:
        """Records of this run matching ``where``, in insertion order."""
        page = f" LIMIT {int(limit)}" if limit is not None else ""
        page += f" OFFSET {int(offset)}" if offset else ""
        sql = f"SELECT {COLUMNS} FROM items WHERE run = ? AND {where} ORDER BY seq{page}"
        return [codec.record(row) for row in self._query(sql, (self.run, *params))]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._reading() as cur:
            cur.execute(self._sql(sql), params)
            return list(cur.fetchall())

    def _executemany(self, cur: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            cur.executemany(self._sql(sql), rows)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)
