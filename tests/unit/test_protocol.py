"""Chunks: every element is processed exactly once, and one element's error stays its own."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import parapipe as pp
from parapipe.worker import protocol
from parapipe.worker.execute import run_chunk
from parapipe.worker.protocol import Chunk, ChunkResult


def test_each_element_runs_once_and_errors_stay_in_place() -> None:
    calls: list[Any] = []

    def process(x: int) -> int:
        calls.append(x)
        if x % 4 == 1:
            raise ValueError(f"bad {x}")
        return x * 10

    out = run_chunk(process, "s", Chunk(range(10)))
    assert calls == list(range(10))  # resumed after each failure, nothing run twice
    assert sorted(out.errors) == [1, 5, 9]
    err = out.errors[5]
    assert isinstance(err, pp.StageError) and err.stage == "s" and err.message == "bad 5"
    assert err.exc_type == "ValueError" and err.index is None  # map sets the index
    assert out.values == [0, None, 20, 30, 40, None, 60, 70, 80, None]


def test_elements_that_failed_upstream_are_skipped() -> None:
    upstream = ChunkResult([1, None, 3], {1: pp.StageError("first", "no", exc_type="ValueError")})
    calls: list[Any] = []
    out = run_chunk(lambda x: calls.append(x) or x + 1, "second", upstream)
    assert calls == [1, 3]
    assert out.values == [2, None, 4]
    assert out.errors[1].stage == "first"


def test_an_unpicklable_element_fails_alone_in_its_chunks_answer() -> None:
    rows: list[Any] = [(7, True, ChunkResult([1, threading.Lock(), 3]), 0.0, 0.0, 0.0)]
    _, (row,), _ = pickle.loads(protocol.dump_results(rows, stage="s"))
    chunk = row[2]
    assert row[1] is True and chunk.values == [1, None, 3] and list(chunk.errors) == [1]
    error = chunk.errors[1]
    assert error.stage == "s" and error.exc_type == "ResultNotPicklable" and "lock" in str(error)
