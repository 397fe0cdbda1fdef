"""map() sends cheap items in chunks; errors, merges and crashes stay per item."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import parapipe as pp
from parapipe.worker.protocol import Chunk

from . import _stages as S


def _warm(engine: pp.Engine) -> None:
    list(engine.map(range(10, 60)))
    assert engine._chunk_size() > 1, "a no-op stage should be chunked"


def test_chunked_map_keeps_order_and_per_item_errors():
    with pp.Engine(pp.stage(S.fail_on_x03, replicas=2)) as engine:
        _warm(engine)
        out = list(engine.map(range(5000), return_exceptions=True))
    errors = {i for i, r in enumerate(out) if isinstance(r, pp.StageError)}
    assert errors == {3, 1003, 2003, 3003, 4003}
    assert all(out[i].index == i and "ends in 003" in str(out[i]) for i in errors)
    assert all(out[i] == i for i in range(5000) if i not in errors)


def test_chunked_map_through_parallel_merges_per_item():
    graph = pp.Pipeline(S.add_one, pp.Parallel(a=S.square, b=S.fail_on_x03, merge=S.merge_sum))
    with pp.Engine(graph) as engine:
        _warm(engine)
        out = list(engine.map(range(3000), return_exceptions=True))
    for i, r in enumerate(out):
        x = i + 1
        if x % 1000 == 3:
            assert isinstance(r, pp.StageError) and r.stage == "fail_on_x03" and r.index == i
        else:
            assert r == x * x + x


def test_poison_item_inside_a_chunk_fails_alone():
    items = ["ok"] * 3000
    items[2500] = "die"
    with pp.Engine(pp.stage(S.kill_self), retries=1) as engine:
        list(engine.map(["warm"] * 50))
        out = list(engine.map(items, return_exceptions=True))
    assert isinstance(out[2500], pp.WorkerDied)
    assert out[:2500] == ["ok"] * 2500 and out[2501:] == ["ok"] * 499


def test_a_last_chunk_of_one_item_is_unwrapped():
    with pp.Engine(pp.stage(S.square)) as engine:
        _warm_square(engine)
        out = list(engine.map(range(engine._chunk_size() + 1)))
    assert out == [i * i for i in range(len(out))]


def _warm_square(engine: pp.Engine) -> None:
    list(engine.map(range(50)))
    assert engine._chunk_size() > 1


def test_a_poison_item_in_a_chunk_kills_as_many_workers_as_alone():
    """The chunk's death splits it, in the pool, into items sent alone: the poison one dies
    retries + 1 times in all (not (retries + 1) * 2, as when the chunk was retried whole)."""
    items = ["ok"] * 3000
    items[1234] = "die"
    with pp.Engine(pp.stage(S.kill_self), retries=2) as engine:
        list(engine.map(["warm"] * 50))
        assert engine._chunk_size() > 1
        out = list(engine.map(items, return_exceptions=True))
        stats = engine.stats()["kill_self"]
    assert isinstance(out[1234], pp.WorkerDied) and out[1234].index == 1234 and out[1234].attempts == 3
    assert out[:1234] == ["ok"] * 1234 and out[1235:] == ["ok"] * 1765
    assert stats["restarts"] == 3
    assert stats["failed"] == 1 and stats["failed_by_kind"] == {"WorkerDied": 1}


def test_elements_that_fail_inside_a_chunk_count_as_failed_not_done():
    with pp.Engine(pp.stage(S.fail_on_x03)) as engine:
        _warm(engine)
        before = engine.stats()["fail_on_x03"]["done"]
        out = list(engine.map(range(5000), return_exceptions=True))
        stats = engine.stats()["fail_on_x03"]
    assert sum(isinstance(r, pp.StageError) for r in out) == 5
    assert stats["failed"] == 5 and stats["failed_by_kind"] == {"StageError": 5}
    assert stats["done"] - before == 4995


def test_a_later_map_sends_no_item_alone():
    """The first map learned the results' size: the next one's first unit is a whole chunk,
    not one item awaited alone (a round trip per map)."""
    with pp.Engine(pp.stage(S.square, replicas=2)) as engine:
        _warm_square(engine)
        sent: list[Any] = []
        submit = engine._submit_indexed

        def recording(value: Any, index: int) -> Future[Any]:
            sent.append(value)
            return submit(value, index)

        engine._submit_indexed = recording  # type: ignore[method-assign]
        out = list(engine.map(range(3000)))
    assert out == [i * i for i in range(3000)]
    assert isinstance(sent[0], Chunk) and len(sent[0]) > 1
