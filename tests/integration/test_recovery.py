"""Whatever dies, no accepted item is lost and none is delivered twice."""

from __future__ import annotations

import contextlib
import os
import random
import signal

import pytest

import parapipe as pp
from parapipe.journal import Journal, State

from . import _stages as S
from ._driver_kill import kill_then_rerun

# Kills come every 50 ms; a spawned worker under pytest needs ~0.5 s to start (it re-imports
# pytest as its __main__), forkserver ~20 ms, so with spawn the pool would be dead most of the time.
START_METHOD = "forkserver"


def test_rerun_returns_stored_results_without_running_again(tmp_path):
    db = tmp_path / "run.db"
    with pp.Engine(S.fail_on_three) as engine:
        first = list(engine.map(range(6), journal=db, return_exceptions=True))
    with pp.Engine(S.fail_on_three) as engine:
        second = list(engine.map(range(6), journal=db, return_exceptions=True))
        assert engine.stats()["fail_on_three"]["done"] == 0, "nothing should run twice"
    assert first[:3] == second[:3] == [0, 1, 2]
    assert isinstance(second[3], pp.StageError) and second[3].index == 3
    assert Journal(db).counts()[State.DONE] == 5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_every_item_done_exactly_once(tmp_path):
    """A worker is SIGKILLed every 50 results the loop receives (paced by work done, not by
    time, so a fast machine still sees the kills). ``max_inflight`` keeps items one by one in a
    small window: cheap items in chunks would all be done before the first kill lands."""
    db = tmp_path / "chaos.db"
    graph = pp.Pipeline(pp.stage(S.times_three, replicas=2), pp.stage(S.add_one, replicas=2))
    rng = random.Random(7)
    kills = []
    out = []
    with pp.Engine(graph, retries=1000, start_method=START_METHOD) as engine:
        for i, result in enumerate(
            engine.map(range(2000), journal=db, key=str, return_exceptions=True, max_inflight=8)
        ):
            out.append(result)
            ready = [w["pid"] for w in engine.workers() if w["state"] == "ready"]
            if i % 50 == 25 and ready:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(ready), signal.SIGKILL)
                    kills.append(i)
    assert out == [3 * i + 1 for i in range(2000)]
    assert len(kills) >= 1
    with Journal(db) as journal:
        assert journal.counts()[State.DONE] == 2000
        retried = [r for r in journal.records(limit=None) if r.attempts > 1]
    assert retried, "the journal should show the retried items"


def test_parent_sigkill_mid_run_then_rerun_gives_each_key_once(tmp_path):
    lines = kill_then_rerun(tmp_path, "tests.integration._stages:signal_graph", 500)
    keys = [line["key"] for line in lines]
    assert len(keys) == 500 and len(set(keys)) == 500
    assert all(line["result"] == f"{line['key']}-done" for line in lines)
