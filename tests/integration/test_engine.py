"""The core promises, with real worker processes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os

import pytest

import parapipe as pp

from . import _stages as S

TIMEOUT = 60


def test_setup_runs_once_per_replica_however_many_items():
    stage = S.Recorder().options(replicas=2)
    with pp.Engine(stage) as engine:
        results = list(engine.map(range(300)))
        pids = {w["pid"] for w in engine.workers()}
    assert [r["item"] for r in results] == list(range(300))
    assert {r["setups"] for r in results} == {1}
    assert {r["pid"] for r in results} <= pids
    assert len(pids) == 2


def test_items_only_reach_their_own_stage_workers():
    graph = pp.Pipeline(S.Recorder("a").options(name="a", replicas=2), S.pid_of)
    with pp.Engine(graph) as engine:
        by_stage = {}
        for w in engine.workers():
            by_stage.setdefault(w["stage"], set()).add(w["pid"])
        pids = list(engine.map(range(100)))
    assert set(pids) <= by_stage["pid_of"]
    assert not set(pids) & by_stage["a"]


def test_first_stage_results_come_from_first_stage_workers():
    graph = pp.Parallel(a=S.Recorder("a").options(name="a", replicas=2), b=S.Recorder("b").options(name="b"))
    with pp.Engine(graph) as engine:
        pools = {}
        for w in engine.workers():
            pools.setdefault(w["stage"], set()).add(w["pid"])
        out = list(engine.map(range(50)))
    assert {r["a"]["pid"] for r in out} <= pools["a"]
    assert {r["b"]["pid"] for r in out} <= pools["b"]
    assert all(r["a"]["tag"] == "a" and r["b"]["tag"] == "b" for r in out)


def test_parallel_branches_overlap_in_time():
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(2)
        graph = pp.Parallel(x=S.BarrierStage(barrier, "x"), y=S.BarrierStage(barrier, "y"))
        with pp.Engine(graph) as engine:
            out = engine.run("item", timeout=TIMEOUT)
    x, y = out["x"], out["y"]
    assert x["pid"] != y["pid"]
    assert max(x["start"], y["start"]) < min(x["end"], y["end"])


def test_pipeline_overlaps_items_across_stages():
    # Stage A blocks on item 1 until stage B is working on item 0: only possible if pipelined.
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(2)
        graph = pp.Pipeline(S.BarrierStage(barrier, "a", only=1), _Relay(barrier))
        with pp.Engine(graph) as engine:
            first = engine.submit(0)
            second = engine.submit(1)
            r0, r1 = first.result(TIMEOUT), second.result(TIMEOUT)
    assert r0["stage"] == "b" and r1["stage"] == "b"
    assert r0["upstream"]["pid"] != r0["pid"]


class _Relay(S.BarrierStage):
    def __init__(self, barrier):
        super().__init__(barrier, "b", only=0)

    def process(self, item):
        out = super().process(item["item"])
        out["upstream"] = item
        return out


def test_slow_items_wait_in_the_parent_for_whichever_replica_frees_first(tmp_path):
    """Once a stage is known to be slow, no item is queued behind a running one: while one
    replica holds an item, every other item goes to the other replica."""
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    with pp.Engine(pp.stage(S.spin_or_hold, replicas=2)) as engine:
        list(engine.map([0.05] * 6))  # the pool learns that an item takes ~50 ms
        held = engine.submit(str(fifo))
        with open(fifo, "w") as release:  # returns once the held item runs (its worker opened the FIFO)
            short = [engine.submit(0.0) for _ in range(3)]
            short_pids = {f.result(TIMEOUT) for f in short}
            release.write("go\n")
        held_pid = held.result(TIMEOUT)
    assert held_pid not in short_pids and len(short_pids) == 1


def test_user_exception_is_stage_error_and_engine_keeps_serving():
    graph = pp.Pipeline(S.add_one, S.fail_on_three)
    with pp.Engine(graph) as engine:
        with pytest.raises(pp.StageError) as info:
            engine.run(2, timeout=TIMEOUT)
        assert engine.run(3, timeout=TIMEOUT) == 4
    err = info.value
    assert err.stage == "fail_on_three"
    assert err.exc_type == "ValueError"
    assert "three is not allowed" in str(err)
    assert "fail_on_three" in err.traceback and "Traceback" in err.traceback
    assert pp.ItemError.from_dict(err.to_dict()).to_dict() == err.to_dict()


@pytest.mark.parametrize("batched", [False, True])
def test_an_unpicklable_result_fails_its_item_only(batched):
    stage = pp.stage(S.unsendable_result)
    if batched:
        stage = _BatchedUnsendable().options(batch_wait=0.05)
    with pp.Engine(stage) as engine:
        out = list(engine.map([0, 1, 2, 3], return_exceptions=True))
    assert out[0] == 0 and out[3] == 3
    for err, kind in ((out[1], "lock"), (out[2], "dict")):
        assert isinstance(err, pp.StageError) and err.exc_type == "ResultNotPicklable", err
        assert f"result of type {kind} cannot be sent back" in str(err)


class _BatchedUnsendable(pp.Stage):
    batch_size = 4

    def process_batch(self, items):
        return [S.unsendable_result(n) for n in items]


def test_map_return_exceptions_keeps_order_and_index():
    with pp.Engine(S.fail_on_three) as engine:
        out = list(engine.map(range(6), return_exceptions=True))
        unordered = sorted(
            x for x in engine.map(range(6), ordered=False, return_exceptions=True) if not isinstance(x, Exception)
        )
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], pp.StageError) and out[3].index == 3
    assert unordered == [0, 1, 2, 4, 5]


def test_map_raises_first_error_without_return_exceptions():
    with pp.Engine(S.fail_on_three) as engine:
        with pytest.raises(pp.StageError):
            list(engine.map(range(10)))
        assert engine.run(5, timeout=TIMEOUT) == 5


def test_map_streams_with_bounded_inflight():
    pulled = itertools.count()

    def endless():
        for i in itertools.count():
            next(pulled)
            yield i

    with pp.Engine(S.square) as engine:
        results = []
        for r in engine.map(endless(), max_inflight=16):
            results.append(r)
            if len(results) == 200:
                break
        consumed = next(pulled)
    assert results == [i * i for i in range(200)]
    assert consumed <= 200 + 16 + 1


def test_nested_graph_and_custom_merge():
    graph = pp.Pipeline(S.add_one, pp.Parallel(a=S.square, b=pp.Pipeline(S.Recorder("r"), _item), merge=S.merge_sum))
    with pp.Engine(graph) as engine:
        assert engine.run(2, timeout=TIMEOUT) == 9 + 3


def _item(d):
    return d["item"]


def test_asubmit_100_concurrent_requests():
    async def main(engine):
        return await asyncio.gather(*(engine.asubmit(i) for i in range(100)))

    with pp.Engine(S.square) as engine:
        out = asyncio.run(main(engine))
    assert out == [i * i for i in range(100)]


def test_worker_logs_reach_parent_tagged(caplog):
    with caplog.at_level(logging.WARNING, logger="user.stage"), pp.Engine(S.log_and_return) as engine:
        engine.run("hello", timeout=TIMEOUT)
        pid = engine.workers()[0]["pid"]
    records = [r for r in caplog.records if r.name == "user.stage"]
    assert records, "no log record from the worker"
    rec = records[0]
    assert rec.stage == "log_and_return" and rec.replica == 0 and rec.process == pid
    assert "handling hello" in rec.getMessage() and f"pid={pid}" in rec.getMessage()


def test_submit_after_close_raises():
    engine = pp.Engine(S.square).start()
    engine.close()
    with pytest.raises(pp.EngineClosed):
        engine.submit(1)
    engine.close()


def test_stats_count_items():
    with pp.Engine(pp.Pipeline(S.add_one, S.fail_on_three)) as engine:
        out = list(engine.map([0, 1, 2, 3], return_exceptions=True))  # 2 + 1 == 3 fails
        stats = engine.stats()
    assert isinstance(out[2], pp.StageError)
    assert stats["add_one"]["done"] == 4 and stats["add_one"]["failed"] == 0
    assert stats["fail_on_three"]["done"] == 3
    assert stats["fail_on_three"]["failed"] == 1
    assert stats["fail_on_three"]["failed_by_kind"] == {"StageError": 1}
    assert stats["add_one"]["latency_p50_s"] is not None


def test_stats_count_every_final_failure_once_and_no_retried_attempt():
    with pp.Engine(S.Troubled(), retries=1) as engine:
        out = list(engine.map(["ok", "die", "hang", "raise"], return_exceptions=True))
        stats = engine.stats()["Troubled"]
    assert out[0] == "ok"
    assert [type(e) for e in out[1:]] == [pp.WorkerDied, pp.TaskTimeout, pp.StageError]
    assert stats["done"] == 1
    assert stats["failed"] == 3  # the first death of "die" was retried: not a failure
    assert stats["failed_by_kind"] == {"WorkerDied": 1, "TaskTimeout": 1, "StageError": 1}


def test_stats_count_items_failed_by_a_stage_that_is_down(tmp_path):
    with pp.Engine(S.SetupOnce(str(tmp_path / "loaded"))) as engine:
        os.kill(engine.run(0, timeout=60), 9)
        with pytest.raises(pp.StageFailed):
            engine.run(1, timeout=60)
        stats = engine.stats()["SetupOnce"]
    assert stats["done"] == 1 and stats["failed"] == 1 and stats["failed_by_kind"] == {"StageFailed": 1}
