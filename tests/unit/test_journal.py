"""The job journal: states, stored results, paging, threads, and a SIGKILLed writer.

Tests taking ``journal`` or ``make`` run on every backend: SQLite, and PostgreSQL where
``PARAPIPE_TEST_POSTGRES`` names a server (``.ci/postgres`` starts one); the rest read the
SQLite file itself."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parapipe.errors import StageError, WorkerDied
from parapipe.journal import (
    JobStore,
    Journal,
    JournalError,
    State,
    Write,
    format_counts,
)

WAIT = 60  # seconds; only reached when something is stuck


class FakeClock:
    """A clock that moves only when told, so timestamps can be asserted exactly."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run.db"


@pytest.fixture
def journal(make: Any) -> Journal:
    with make() as journal:
        yield journal


def _raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with a separate plain connection, as another tool would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _run_to_done(journal: Journal, key: str, result: Any) -> None:
    journal.add([key])
    journal.mark_running(key)
    journal.mark_done(key, result)


# -- opening -------------------------------------------------------------------------------------


def test_file_is_in_wal_mode(sqlite_journal: Journal, path: Path) -> None:
    assert _raw(path, "PRAGMA journal_mode") == [("wal",)]


def test_satisfies_the_job_store_protocol(journal: Journal) -> None:
    assert isinstance(journal, JobStore)


def test_refuses_a_file_from_a_newer_schema(path: Path) -> None:
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_a_file_that_is_not_a_database_raises_journal_error(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=str(path)):
        Journal(path)


def test_close_is_idempotent_and_later_calls_raise(path: Path) -> None:
    journal = Journal(path)
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.get("a")


# -- add -----------------------------------------------------------------------------------------


def test_add_is_idempotent_and_returns_the_records_already_there(journal: Journal) -> None:
    assert journal.add(["a", "b"]) == {}
    _run_to_done(journal, "a", 1)

    existing = journal.add(["a", "b", "c"])

    assert set(existing) == {"a", "b"}
    assert existing["a"].state is State.DONE
    assert existing["a"].result == 1
    assert existing["b"].state is State.QUEUED
    assert journal.counts()[State.QUEUED] == 2
    assert [r.key for r in journal.records()] == ["a", "b", "c"]


def test_add_refuses_repeated_and_non_string_keys(journal: Journal) -> None:
    with pytest.raises(JournalError, match="'a' is given to more than one item"):
        journal.add(["a", "b", "a"])
    with pytest.raises(JournalError, match="must be str"):
        journal.add([1])  # type: ignore[list-item]
    assert journal.records() == []


def test_add_many_keys_in_one_call(journal: Journal) -> None:
    keys = [f"k{i}" for i in range(2_345)]  # more than one chunk of host parameters
    journal.add(keys[:1_000])
    existing = journal.add(keys)
    assert len(existing) == 1_000
    assert journal.counts()[State.QUEUED] == len(keys)


def test_payloads_are_stored_for_new_keys_only(journal: Journal) -> None:
    journal.add(["a"], payloads=[{"path": "a.wav"}])
    journal.add(["a", "b"], payloads=[{"path": "other.wav"}, ("b.wav", 16_000)])

    assert journal.get("a").payload == {"path": "a.wav"}
    assert journal.get("b").payload == ("b.wav", 16_000)


def test_payload_count_must_match_keys(journal: Journal) -> None:
    with pytest.raises(JournalError, match="2 payloads for 1 keys"):
        journal.add(["a"], payloads=[1, 2])


def test_runs_are_separate_namespaces_in_one_file(make: Any) -> None:
    with make(run="asr") as asr, make(run="vad") as vad:
        asr.add(["x"])
        vad.add(["x"])
        _run_to_done(asr, "x", "text")

        assert vad.get("x").state is State.QUEUED
        assert asr.get("x").result == "text"
        assert asr.runs() == ["asr", "vad"]


# -- results -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        {"text": "hello", "words": [{"w": "hello", "p": 0.9}], "speaker": None, "ok": True},
        [1, 2.5, "x"],
        None,
    ],
)
def test_plain_json_results_are_stored_as_json(sqlite_journal: Journal, path: Path, result: Any) -> None:
    sqlite_journal.add(["a"])
    _run_to_done(sqlite_journal, "a", result)

    record = sqlite_journal.get("a")
    assert record.result == result
    assert record.result_stored
    assert _raw(path, "SELECT result_kind FROM items") == [("json",)]


@pytest.mark.parametrize(
    "result",
    [
        {1, 2, 3},
        (1, "tuple"),
        {1: "int key"},
        [float("nan")],
        State.DONE,
    ],
    ids=["set", "tuple", "int-key", "nan", "enum"],
)
def test_values_json_would_change_are_pickled(sqlite_journal: Journal, path: Path, result: Any) -> None:
    sqlite_journal.add(["a"])
    _run_to_done(sqlite_journal, "a", result)

    stored = sqlite_journal.get("a").result
    assert type(stored) is type(result)
    assert repr(stored) == repr(result)
    assert _raw(path, "SELECT result_kind FROM items") == [("pickle",)]


def test_numpy_result_roundtrips(journal: Journal) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    journal.add(["a"])
    _run_to_done(journal, "a", array)

    stored = journal.get("a").result
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, array)


@pytest.mark.parametrize("result", ["x" * 2_000, np.zeros(1_000)], ids=["json", "pickle"])
def test_a_result_over_the_limit_is_not_stored(make: Any, result: Any) -> None:
    with make(max_result_bytes=1_000) as journal:
        journal.add(["a"])
        _run_to_done(journal, "a", result)
        record = journal.get("a")

    assert record.state is State.DONE
    assert not record.result_stored
    assert record.result is None


def test_an_unpicklable_result_raises_and_leaves_the_item_running(journal: Journal) -> None:
    journal.add(["a"])
    journal.mark_running("a")
    with pytest.raises(JournalError, match="neither plain JSON nor picklable"):
        journal.mark_done("a", threading.Lock())
    assert journal.get("a").state is State.RUNNING


def test_failed_error_roundtrips_as_item_error(journal: Journal) -> None:
    error = StageError("asr", "boom", exc_type="ValueError", traceback="tb", index=3, key="a")
    journal.add(["a"])
    journal.mark_running("a")
    journal.mark_failed("a", error, retryable=False)

    record = journal.get("a")
    assert record.error == error.to_dict()
    rebuilt = record.item_error()
    assert isinstance(rebuilt, StageError)
    assert str(rebuilt) == str(error)


# -- state machine -------------------------------------------------------------------------------


def _to_state(journal: Journal, key: str, state: State) -> None:
    journal.add([key])
    if state is State.QUEUED:
        return
    journal.mark_running(key)
    if state is State.DONE:
        journal.mark_done(key, None)
    elif state is State.FAILED:
        journal.mark_failed(key, {"message": "x"}, retryable=True)
    elif state is State.CANCELLED:
        journal.mark_cancelled(key)


_MOVES = {
    State.RUNNING: lambda j, k: j.mark_running(k),
    State.DONE: lambda j, k: j.mark_done(k, 1),
    State.FAILED: lambda j, k: j.mark_failed(k, {"message": "x"}, retryable=False),
    State.CANCELLED: lambda j, k: j.mark_cancelled(k),
}

_ALLOWED = {
    (State.QUEUED, State.RUNNING),
    (State.QUEUED, State.FAILED),
    (State.QUEUED, State.CANCELLED),
    (State.RUNNING, State.RUNNING),
    (State.RUNNING, State.DONE),
    (State.RUNNING, State.FAILED),
    (State.RUNNING, State.CANCELLED),
    (State.FAILED, State.RUNNING),
}


@pytest.mark.parametrize("start", list(State), ids=str)
@pytest.mark.parametrize("target", list(_MOVES), ids=str)
def test_state_transitions(journal: Journal, start: State, target: State) -> None:
    _to_state(journal, "a", start)
    before = journal.get("a")
    if (start, target) in _ALLOWED:
        _MOVES[target](journal, "a")
        assert journal.get("a").state is target
    else:
        with pytest.raises(JournalError, match=f"cannot mark item 'a' {target}: it is {start}"):
            _MOVES[target](journal, "a")
        assert journal.get("a") == before  # the refused move changed nothing


def test_done_is_final_and_the_message_says_so(journal: Journal) -> None:
    _to_state(journal, "a", State.DONE)
    with pytest.raises(JournalError, match="final"):
        journal.mark_running("a")


def test_unknown_key_raises(journal: Journal) -> None:
    assert journal.get("nope") is None
    with pytest.raises(JournalError, match="no item with key 'nope'"):
        journal.mark_running("nope")


def test_retry_counts_attempts_and_keeps_their_history(journal: Journal) -> None:
    journal.add(["a"])
    assert journal.mark_running("a") == 1
    journal.mark_failed("a", WorkerDied("asr", exitcode=-9), retryable=True)
    assert journal.mark_running("a") == 2
    assert journal.get("a").error is None
    journal.mark_done("a", "ok")

    record = journal.get("a")
    assert (record.state, record.attempts, record.result) == (State.DONE, 2, "ok")
    log = journal.attempt_log("a")
    assert [(e["attempt"], e["state"]) for e in log] == [(1, "failed"), (2, "done")]
    assert log[0]["error"]["exitcode"] == -9
    assert log[1]["error"] is None


def test_requeue_failed_puts_failed_items_back_in_the_queue(journal: Journal) -> None:
    for key in "abc":
        _to_state(journal, key, State.FAILED)
    _to_state(journal, "d", State.DONE)

    assert journal.requeue_failed() == 3

    assert journal.counts() == {**dict.fromkeys(State, 0), State.QUEUED: 3, State.DONE: 1}
    assert journal.attempt_log("a")[0]["state"] == "failed"


# -- resume --------------------------------------------------------------------------------------


def test_pending_after_a_crash_returns_queued_and_running_failed_stays_failed(make: Any) -> None:
    crashed = make()
    crashed.add([f"k{i}" for i in range(6)])
    _run_to_done(crashed, "k0", 0)
    crashed.mark_running("k1")  # in flight when the parent died
    crashed.mark_running("k2")
    crashed.mark_failed("k2", {"message": "died"}, retryable=True)
    crashed.mark_running("k3")
    crashed.mark_failed("k3", {"message": "bad input"}, retryable=False)
    crashed.mark_cancelled("k4")
    # k5 never started. The crash: this connection is simply never closed.

    with make() as resumed:
        assert [r.key for r in resumed.pending()] == ["k1", "k5"]  # a failure had its retries
        assert [r.key for r in resumed.pending(include_failed=True)] == ["k1", "k2", "k3", "k5"]
        assert resumed.mark_running("k1") == 2
        log = resumed.attempt_log("k1")
    assert [e["state"] for e in log] == ["interrupted", "running"]
    crashed.close()


def _write_until_killed(path: str, ready_after: int, ready: Any) -> None:
    """Child process: add, start and finish items forever, signalling after ``ready_after``."""
    with Journal(path) as journal:
        for i in itertools.count():
            key = f"k{i}"
            journal.add([key], payloads=[i])
            journal.mark_running(key)
            journal.mark_done(key, {"i": i, "pad": "x" * 500})
            if i + 1 == ready_after:
                ready.set()


def test_a_journal_killed_mid_write_is_readable_and_consistent(path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_write_until_killed, args=(str(path), 200, ready))
    child.start()
    try:
        assert ready.wait(WAIT), "the writer never reached 200 items"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(WAIT)
    assert child.exitcode == -signal.SIGKILL

    with Journal(path) as journal:
        assert _raw(path, "PRAGMA integrity_check") == [("ok",)]
        records = journal.records(limit=None)
        done = [r for r in records if r.state is State.DONE]
        unfinished = journal.pending()

        assert len(done) >= 200
        assert len(done) + len(unfinished) == len(records)
        assert len(unfinished) <= 1  # only the item in flight at the kill
        assert [r.key for r in records] == [f"k{i}" for i in range(len(records))]
        for i, record in enumerate(done):
            assert (record.result, record.payload, record.attempts) == (
                {"i": i, "pad": "x" * 500},
                i,
                1,
            )
        for record in unfinished:  # the resume can finish it
            journal.mark_running(record.key)
            journal.mark_done(record.key, "late")
        assert journal.counts()[State.DONE] == len(records)


# -- threads, paging, clock ----------------------------------------------------------------------


def test_threads_marking_different_keys_concurrently(journal: Journal, make: Any) -> None:
    per_thread = 50
    keys = [[f"t{t}-{i}" for i in range(per_thread)] for t in range(4)]
    journal.add([k for chunk in keys for k in chunk])
    start = threading.Barrier(4, timeout=WAIT)
    errors: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        try:
            start.wait()
            for key in chunk:
                _run_to_done(journal, key, key.upper())
        except BaseException as exc:  # handed to the main thread, which fails the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert errors == []
    assert journal.counts()[State.DONE] == 4 * per_thread
    assert all(r.result == r.key.upper() and r.attempts == 1 for r in journal.records(limit=None))
    with make() as reader:  # another connection sees every commit
        assert reader.counts() == journal.counts()


def test_records_are_paged_in_insertion_order(journal: Journal) -> None:
    keys = [f"k{i:02d}" for i in range(25)]
    journal.add(list(reversed(keys)))
    for key in keys[::5]:
        _run_to_done(journal, key, None)

    pages = [journal.records(offset=offset, limit=10) for offset in (0, 10, 20, 30)]

    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [r.key for p in pages for r in p] == list(reversed(keys))
    done = journal.records(State.DONE, offset=1, limit=2)
    assert [r.key for r in done] == ["k15", "k10"]
    with pytest.raises(JournalError, match=">= 0"):
        journal.records(offset=-1)


def test_injected_clock_gives_exact_timestamps(make: Any) -> None:
    clock = FakeClock(100.0)
    with make(clock=clock) as journal:
        journal.add(["a"])
        clock.now = 105.0
        journal.mark_running("a")
        clock.now = 107.5
        journal.mark_failed("a", {"message": "x"}, retryable=True)
        clock.now = 110.0
        journal.mark_running("a")
        clock.now = 112.0
        journal.mark_done("a", 1)
        record = journal.get("a")
        log = journal.attempt_log("a")

    assert (record.created, record.started, record.finished) == (100.0, 110.0, 112.0)
    assert [(e["started"], e["finished"]) for e in log] == [(105.0, 107.5), (110.0, 112.0)]


def test_format_counts(journal: Journal) -> None:
    assert format_counts(journal) == "run 'default': 0 items"
    journal.add(["a", "b", "c"])
    _run_to_done(journal, "a", 1)
    journal.mark_cancelled("b")
    assert format_counts(journal) == "run 'default': 3 items, 1 queued, 1 done, 1 cancelled"


def test_apply_writes_a_batch_in_one_transaction_and_refuses_only_the_bad_move(journal: Journal) -> None:
    journal.add(["a", "b", "c"])
    answers = journal.apply(
        [
            Write("a", State.RUNNING),
            Write("b", State.RUNNING),
            Write("a", State.DONE, {"x": 1}),
            Write("c", State.DONE, 3),  # queued -> done is not a move
            Write("b", State.FAILED, error={"message": "died"}, retryable=True),
            Write("a", State.RUNNING),  # done is final
        ]
    )
    assert answers[:3] == [1, 1, 0] and answers[4] == 0
    assert isinstance(answers[3], JournalError) and "only an item that is running" in str(answers[3])
    assert isinstance(answers[5], JournalError) and "final" in str(answers[5])
    a, b, c = (journal.get(k) for k in "abc")
    assert a is not None and (a.state, a.result) == (State.DONE, {"x": 1})
    assert b is not None and (b.state, b.retryable) == (State.FAILED, True)
    assert c is not None and c.state == State.QUEUED


def test_apply_refuses_an_unstorable_value_alone(journal: Journal) -> None:
    journal.add(["a", "b"])
    journal.apply([Write("a", State.RUNNING), Write("b", State.RUNNING)])
    answers = journal.apply([Write("a", State.DONE, threading.Lock()), Write("b", State.DONE, 2)])
    assert isinstance(answers[0], JournalError) and answers[1] == 0
    assert [journal.get(k).state for k in "ab"] == [State.RUNNING, State.DONE]  # type: ignore[union-attr]


def test_no_result_limit_stores_a_large_result(make: Any) -> None:
    big = b"x" * (3 << 20)
    with make(max_result_bytes=None) as journal:
        _run_to_done(journal, "k", big)
        record = journal.get("k")
    assert record is not None and record.result_stored and record.result == big


_SCHEMA_V1 = """
CREATE TABLE items (seq INTEGER PRIMARY KEY, run TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, retryable INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    started REAL, finished REAL, error TEXT, result_kind TEXT, result BLOB, payload_kind TEXT, payload BLOB,
    UNIQUE (run, key));
CREATE INDEX items_by_state ON items (run, state, seq);
CREATE TABLE attempts (run TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
    error TEXT, started REAL, finished REAL, PRIMARY KEY (run, key, attempt));
INSERT INTO items (run, key, state, attempts, created, started, finished, result_kind, result)
    VALUES ('default', 'a', 'done', 2, 1, 3, 4, 'json', '7');
INSERT INTO items (run, key, state, attempts, created, started) VALUES ('default', 'b', 'running', 1, 1, 2);
INSERT INTO attempts VALUES ('default', 'a', 1, 'interrupted', NULL, 1, 2);
INSERT INTO attempts VALUES ('default', 'a', 2, 'done', NULL, 3, 4);
INSERT INTO attempts VALUES ('default', 'b', 1, 'running', NULL, 2, NULL);
PRAGMA user_version = 1;
"""


def test_a_version_1_file_is_upgraded_with_its_history(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_V1)
    conn.close()

    with Journal(path) as journal:
        assert journal.get("a").result == 7
        assert [(e["attempt"], e["state"]) for e in journal.attempt_log("a")] == [(1, "interrupted"), (2, "done")]
        assert journal.claim(["b"]) == {}  # a v1 running item has no lease: a crashed run's
        assert [(e["attempt"], e["state"]) for e in journal.attempt_log("b")] == [(1, "interrupted"), (2, "running")]
    assert _raw(path, "PRAGMA user_version") == [(2,)]
