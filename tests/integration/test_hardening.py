"""Issue 19, item 1: a failure to (un)pickle an item or a result, in any thread of the parent or
the worker, fails that item alone; no parent thread dies silently."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import parapipe as pp
from parapipe.journal import Journal, State
from parapipe.recovery import JournaledRunner
from parapipe.worker.spawn import Deadlines

from ._hardening_stages import PARENT_PID_ENV, UnloadableResult, WorkerUnloadable, deep_result, echo, nest


def _outcome(future: Future[Any]) -> str:
    try:
        future.result(timeout=60)
    except pp.ItemError as exc:
        return type(exc).__name__
    return "ok"


def test_items_nested_near_the_recursion_limit_fail_alone_and_the_stage_keeps_serving() -> None:
    with pp.Engine(echo, start_method="spawn") as engine:
        outcomes = {depth: _outcome(engine.submit(nest(depth))) for depth in range(470, 530, 4)}
        assert set(outcomes.values()) <= {"ok", "StageError"}, outcomes
        assert "StageError" in outcomes.values()  # the sweep crossed the edge
        assert engine.submit("after").result(timeout=60) == "after"


def test_results_nested_near_the_recursion_limit_fail_alone_without_killing_the_worker() -> None:
    with pp.Engine(deep_result, start_method="spawn", retries=0) as engine:
        outcomes = {depth: _outcome(engine.submit(depth)) for depth in range(470, 1000, 10)}
        assert set(outcomes.values()) <= {"ok", "StageError"}, outcomes
        assert engine.submit(3).result(timeout=60) == [[[0]]]


def test_a_result_the_parent_cannot_unpickle_fails_its_item_and_the_reader_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getpid()))
    with pp.Engine(UnloadableResult(), start_method="spawn") as engine:
        with pytest.raises(pp.WorkerDied):
            engine.submit("bad").result(timeout=60)
        assert engine.submit("good").result(timeout=60) == "good"


def test_an_item_a_worker_cannot_unpickle_fails_alone_and_the_worker_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getpid()))
    with pp.Engine(echo, start_method="spawn") as engine:
        futures = [engine.submit(item) for item in (1, WorkerUnloadable(), 2, 3)]  # cheap: packed together
        with pytest.raises(pp.StageError, match="cannot be unpickled in the worker"):
            futures[1].result(timeout=60)
        assert [futures[i].result(timeout=60) for i in (0, 2, 3)] == [1, 2, 3]
        assert engine.stats()["echo"]["restarts"] == 0


def test_the_deadline_thread_survives_a_handler_that_raises() -> None:
    seen: list[str] = []
    second = threading.Event()

    def expired(key: str) -> None:
        seen.append(key)
        if key == "first":
            raise RuntimeError("a broken handler")
        second.set()

    deadlines = Deadlines(expired, "test")
    try:
        deadlines.arm("first", 0)
        deadlines.arm("second", 0.01)
        assert second.wait(10), seen
    finally:
        deadlines.close()


def _answered(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


@pytest.mark.parametrize("value", [nest(5000), lambda: 0], ids=["too-deep", "unpicklable"])
def test_a_result_the_journal_cannot_store_fails_its_item_instead_of_staying_running(
    tmp_path: Path, value: Any
) -> None:
    journal = Journal(tmp_path / "j.db", run="t")
    journal.add(["a", "b"])
    runner = JournaledRunner(journal, lambda item, key, index, on_retry: _answered(item))
    try:
        with pytest.raises(pp.JournalError):
            runner.submit(value, "a").result(timeout=30)
        assert runner.submit("fine", "b").result(timeout=30) == "fine"  # the writer still runs
        assert runner.failure is None
    finally:
        runner.close()
    record = journal.get("a")
    assert record is not None and record.state is State.FAILED
    assert record.error is not None and record.error["type"] == "ResultNotStorable"
    journal.close()
