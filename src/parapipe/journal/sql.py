"""The journal's logic in SQL, written once for SQLite and PostgreSQL.

A backend gives a connection, its schema, a write transaction and the few statements whose
spelling differs (the hooks of `SqlBase`, which also holds the reads); everything else (the
state table, claims and leases, the attempt log, batching) lives here, so both backends behave
the same and pass the same tests.

Writes come in batches: `claim` and `add` take many keys per transaction, and `apply` checks
a whole batch with one SELECT per ``in_chunk`` keys and applies consecutive changes of one kind with one
``executemany``. The latest attempt of an item lives in its row; the ``attempts`` table keeps
only the earlier ones (written when an attempt is interrupted, retried or requeued), so the
common life of an item, claimed then done, touches one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import JournalError
from . import codec
from .base import SqlBase
from .codec import COLUMNS, INTERRUPTED, SOURCES, Change, Record, State, Write
from .store import Reclaim, owner_is_dead

__all__ = ["SqlJournal", "schema"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq          {serial} PRIMARY KEY,
    run          TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    state        TEXT    NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    retryable    INTEGER NOT NULL DEFAULT 0,
    created      {real} NOT NULL,
    started      {real},
    finished     {real},
    error        TEXT,
    result_kind  TEXT,
    result       {blob},
    payload_kind TEXT,
    payload      {blob},
    owner        TEXT,
    lease_until  {real},
    UNIQUE (run, key)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (run, state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    run      TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    state    TEXT    NOT NULL,
    error    TEXT,
    started  {real},
    finished {real},
    PRIMARY KEY (run, key, attempt)
)
"""


def schema(*, serial: str, real: str, blob: str) -> list[str]:
    """The tables' statements in a backend's spelling of an auto-increment key, a float and a
    byte string: one schema, so the two backends cannot drift apart."""
    return [s for s in _SCHEMA.format(serial=serial, real=real, blob=blob).split(";") if s.strip()]


_MOVE = (
    "UPDATE items SET state = ?, finished = ?, error = ?, retryable = ?, result_kind = ?, result = ?"
    " WHERE run = ? AND key = ?"
)
_START = (
    "UPDATE items SET state = 'running', attempts = ?, started = ?, finished = NULL, error = NULL,"
    " retryable = 0, owner = ?, lease_until = ? WHERE run = ? AND key = ?"
)
_HISTORY = (
    "INSERT INTO attempts (run, key, attempt, state, error, started, finished) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
_STATE_COLUMNS = "key, state, attempts, started, finished, error, owner"


class SqlJournal(SqlBase):
    """A `JobStore` in SQL, safe to share between the threads of a process (see the package
    docstring for the states and the guarantees). Subclasses open the database."""

    # -- writes ------------------------------------------------------------------------------

    def add(self, keys: Sequence[str], *, payloads: Sequence[Any] | None = None) -> dict[str, Record]:
        """Insert the keys not yet in this run as queued, all in one transaction.

        Returns the records of the keys that were already there, so the caller can skip the
        done ones and re-run the rest. ``payloads`` (one per key) are stored with the new keys
        only: a follower (``parapipe run --follow``) and the service run items from them.
        """
        keys = list(keys)
        codec.check_keys(keys)
        blobs = codec.payload_blobs(keys, payloads)
        with self._transaction() as cur:
            existing = self._select_keys(cur, keys, COLUMNS, "")
            now = self._clock()
            rows = [
                (self.run, key, now, *self._blob(value))
                for key, value in zip(keys, blobs, strict=True)
                if key not in existing
            ]
            if rows:
                self._insert(cur, rows, running=False)
                self._notify(cur)
        return {key: codec.record(row) for key, row in existing.items()}

    def claim(self, keys: Sequence[str], *, reclaim: Reclaim | None = None) -> dict[str, Record]:
        """Take the keys to run, in one transaction: new keys are added, and queued ones, ones
        whose lease expired (or whose owner died on this machine) and failed ones ``reclaim``
        accepts become running under this runner's lease.

        Returns the records of the keys *not* claimed: finished ones (answer them from their
        record), and ones another runner holds (ask again later).
        """
        keys = list(keys)
        codec.check_keys(keys)
        with self._transaction() as cur:
            rows = self._select_keys(cur, keys, COLUMNS, self.skip_locked)
            now = self._clock()
            left: dict[str, Record] = {}
            starts, history = [], []
            for key, row in rows.items():
                rec = codec.record(row)
                if not self._claimable(rec, now, reclaim):
                    left[key] = rec
                    continue
                starts.append((rec.attempts + 1, now, self.owner, now + self.lease, self.run, key))
                history += self._history(rec, now)
            self._executemany(cur, _HISTORY, history)
            self._executemany(cur, _START, starts)
            new = [(self.run, key, now, None, None) for key in keys if key not in rows]
            inserted = self._insert(cur, new, running=True) if new else set()
        missed = [key for key in keys if key not in rows and key not in inserted]
        if missed:  # being claimed by another runner right now (PostgreSQL's SKIP LOCKED)
            with self._reading() as cur:
                left.update((k, codec.record(r)) for k, r in self._select_keys(cur, missed, COLUMNS, "").items())
        return left

    def claim_next(self, limit: int) -> list[Record]:
        """Claim up to ``limit`` items that no one runs (queued, or running under a lease that
        expired or whose owner died here), oldest first, for a follower. One transaction.

        Only items stored with a payload are taken: a follower runs the payload, and an item a
        ``map`` added (its key only) is that map's to run."""
        self._expire_dead_owners()
        with self._transaction() as cur:
            now = self._clock()
            cur.execute(
                self._sql(
                    f"SELECT {COLUMNS} FROM items WHERE run = ? AND payload_kind IS NOT NULL AND (state = 'queued'"
                    " OR (state = 'running' AND (lease_until IS NULL OR lease_until < ?)))"
                    f" ORDER BY seq LIMIT ?{self.skip_locked}"
                ),
                (self.run, now, limit),
            )
            found = [codec.record(row) for row in cur.fetchall()]
            history = [entry for rec in found for entry in self._history(rec, now)]
            self._executemany(cur, _HISTORY, history)
            self._executemany(
                cur, _START, [(r.attempts + 1, now, self.owner, now + self.lease, self.run, r.key) for r in found]
            )
        return found

    def apply(self, writes: Sequence[Write]) -> list[int | Exception]:
        """Apply the state changes in order, all in one transaction.

        Each answer is the attempt number a RUNNING write started (0 for the other states), or
        the `JournalError` that refused that one write (a move the state table forbids, an item
        another runner holds, a value that cannot be stored); a refused write leaves the others
        applied.
        """
        prepared = [codec.prepare(write, self._max_result_bytes) for write in writes]
        keys = list(dict.fromkeys(c.key for c in prepared if not isinstance(c, JournalError)))
        answers: list[int | Exception] = []
        with self._transaction() as cur:
            current = {k: list(r) for k, r in self._select_keys(cur, keys, _STATE_COLUMNS, self.lock_rows).items()}
            now = self._clock()
            batch = _Batch(self, cur)
            for change in prepared:
                try:
                    if isinstance(change, JournalError):
                        raise change
                    answers.append(self._move(batch, current.get(change.key), change, now))
                except JournalError as refused:
                    answers.append(refused)
            batch.flush()
        return answers

    def renew(self) -> int:
        """Extend the lease of every item this runner holds; returns how many."""
        with self._transaction() as cur:
            now = self._clock()
            cur.execute(
                self._sql("UPDATE items SET lease_until = ? WHERE run = ? AND owner = ? AND state = 'running'"),
                (now + self.lease, self.run, self.owner),
            )
            return int(cur.rowcount)

    def release(self) -> int:
        """Give back every item this runner holds but did not finish: queued again (the open
        attempt is logged interrupted), for another runner or the next run. Returns how many."""
        with self._transaction() as cur:
            now = self._clock()
            where = "WHERE run = ? AND owner = ? AND state = 'running'"
            cur.execute(
                self._sql(
                    "INSERT INTO attempts (run, key, attempt, state, started, finished)"
                    f" SELECT run, key, attempts, '{INTERRUPTED}', started, ? FROM items {where} ON CONFLICT DO NOTHING"
                ),
                (now, self.run, self.owner),
            )
            cur.execute(
                self._sql(f"UPDATE items SET state = 'queued', owner = NULL, lease_until = NULL {where}"),
                (self.run, self.owner),
            )
            count = int(cur.rowcount)
            if count:
                self._notify(cur)
            return count

    def mark_running(self, key: str) -> int:
        """Start an attempt under this runner's lease and return its number (1 for the first):
        ``started`` = now, and the last error is cleared.

        Allowed from running too, whoever holds it: after a crash the item is still marked
        running, and the attempt that the dead process left open is logged as interrupted.
        (`claim` is the move that respects another runner's live lease.)
        """
        return self._apply_strict(Write(key, State.RUNNING))

    def mark_done(self, key: str, result: Any) -> None:
        """Finish the item with its result (JSON when it round-trips exactly, else a pickle)."""
        self._apply_strict(Write(key, State.DONE, result))

    def mark_failed(self, key: str, error: Any, *, retryable: bool) -> None:
        """Finish the item with an error; ``retryable`` records that a rerun may succeed (a
        worker death or a timeout), for `pending` (``include_failed``) and for people."""
        self._apply_strict(Write(key, State.FAILED, error=error, retryable=retryable))

    def mark_cancelled(self, key: str) -> None:
        """Cancel a queued or running item; it is never run again."""
        self._apply_strict(Write(key, State.CANCELLED))

    def prune(self, finished_before: float) -> list[str]:
        """Drop the payloads of every finished and cancelled item, delete those finished before
        ``finished_before`` (a `time.time`); returns the deleted keys. Keeps a long-running
        service's journal bounded."""
        final = ("done", "failed", "cancelled")
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE items SET payload = NULL, payload_kind = NULL"
                    " WHERE run = ? AND state IN (?, ?, ?) AND payload IS NOT NULL"
                ),
                (self.run, *final),
            )
            cur.execute(
                self._sql(
                    "SELECT key FROM items WHERE run = ? AND state IN (?, ?, ?) AND COALESCE(finished, created) < ?"
                ),
                (self.run, *final, finished_before),
            )
            keys = [str(row[0]) for row in cur.fetchall()]
            gone = [(self.run, key) for key in keys]
            cur.executemany(self._sql("DELETE FROM attempts WHERE run = ? AND key = ?"), gone)
            cur.executemany(self._sql("DELETE FROM items WHERE run = ? AND key = ?"), gone)
        return keys

    def requeue_failed(self) -> int:
        """Put every failed item of the run back in the queue; returns how many.

        For ``parapipe jobs run.db --retry-failed``: the next resume then re-runs them. Their
        errors stay in the attempt log.
        """
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO attempts (run, key, attempt, state, error, started, finished)"
                    " SELECT run, key, attempts, state, error, started, finished FROM items"
                    " WHERE run = ? AND state = 'failed' AND attempts > 0 ON CONFLICT DO NOTHING"
                ),
                (self.run,),
            )
            cur.execute(
                self._sql(
                    "UPDATE items SET state = 'queued', error = NULL, retryable = 0, finished = NULL"
                    " WHERE run = ? AND state = 'failed'"
                ),
                (self.run,),
            )
            count = int(cur.rowcount)
            if count:
                self._notify(cur)
            return count

    # -- internals ---------------------------------------------------------------------------

    def _claimable(self, rec: Record, now: float, reclaim: Reclaim | None) -> bool:
        if rec.state is State.QUEUED:
            return True
        if rec.state is State.RUNNING:
            expired = rec.lease_until is None or rec.lease_until < now
            return expired or rec.owner == self.owner or owner_is_dead(rec.owner)
        return rec.state is State.FAILED and reclaim is not None and reclaim(rec)

    def _history(self, rec: Record, now: float) -> list[tuple[Any, ...]]:
        """The attempts-table row that keeps ``rec``'s current attempt when a new one starts."""
        if rec.attempts == 0 or rec.state is State.QUEUED:
            return []
        error = codec.dumps_error(rec.error)
        if rec.state is State.RUNNING:
            return [(self.run, rec.key, rec.attempts, INTERRUPTED, None, rec.started, now)]
        return [(self.run, rec.key, rec.attempts, rec.state.value, error, rec.started, rec.finished)]

    def _move(self, batch: _Batch, row: list[Any] | None, change: Change, now: float) -> int:
        """One move after checking the state table and the lease; ``row`` (of `_STATE_COLUMNS`)
        is updated in place, so later writes of the same batch see it."""
        key, state = change.key, change.state
        if row is None:
            raise JournalError(f"no item with key {key!r} in run {self.run!r} of {self.path}")
        current = State(row[1])
        if current not in SOURCES[state]:
            raise JournalError(codec.bad_move(key, current, state))
        if state in (State.DONE, State.FAILED) and current is State.RUNNING and row[6] not in (None, self.owner):
            raise JournalError(
                f"item {key!r} is now held by another runner ({row[6]}): this runner's lease on it expired, "
                "so its outcome here is not recorded (renew leases more often: a longer `lease`)"
            )
        if state is State.RUNNING:
            attempt = int(row[2]) + 1
            if current is State.RUNNING and row[2]:
                batch.add(_HISTORY, (self.run, key, row[2], INTERRUPTED, None, row[3], now))
            elif current is State.FAILED and row[2]:
                batch.add(_HISTORY, (self.run, key, row[2], current.value, row[5], row[3], row[4]))
            batch.add(_START, (attempt, now, self.owner, now + self.lease, self.run, key))
            row[1:7] = ["running", attempt, now, None, None, self.owner]
            return attempt
        batch.add(
            _MOVE, (state.value, now, change.error, int(change.retryable), *self._blob(change.result), self.run, key)
        )
        row[1], row[4], row[5] = state.value, now, change.error
        return 0

    def _apply_strict(self, write: Write) -> int:
        answer = self.apply([write])[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _expire_dead_owners(self) -> None:
        """End the leases of runners that died on this machine, so a follower need not wait
        them out."""
        owners = self._query("SELECT DISTINCT owner FROM items WHERE run = ? AND state = 'running'", (self.run,))
        dead = [owner for (owner,) in owners if owner != self.owner and owner_is_dead(owner)]
        if dead:
            with self._transaction() as cur:
                self._executemany(
                    cur,
                    "UPDATE items SET lease_until = 0 WHERE run = ? AND owner = ? AND state = 'running'",
                    [(self.run, owner) for owner in dead],
                )


class _Batch:
    """Consecutive statements of one kind, sent with one ``executemany``; order is kept."""

    __slots__ = ("cur", "journal", "rows", "sql")

    def __init__(self, journal: SqlJournal, cur: Any) -> None:
        self.journal = journal
        self.cur = cur
        self.sql = ""
        self.rows: list[tuple[Any, ...]] = []

    def add(self, sql: str, row: tuple[Any, ...]) -> None:
        if sql != self.sql:
            self.flush()
            self.sql = sql
        self.rows.append(row)

    def flush(self) -> None:
        self.journal._executemany(self.cur, self.sql, self.rows)
        self.rows = []
