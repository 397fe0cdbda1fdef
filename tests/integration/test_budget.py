"""Each worker gets exactly the CPU budget the plan says, read from inside the worker."""

from __future__ import annotations

import os

import pytest

import parapipe as pp

from . import _stages as S

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")


@needs_two_cores
def test_disjoint_pinning_and_thread_caps_inside_workers():
    with pp.Engine(S.Budget(), cores=[0, 1]) as engine:
        plan = {w["replica"]: w for w in engine.workers()}
        seen = {}
        for r in engine.map(range(40)):
            seen[r["pid"]] = r
        plan_text = engine.plan()
    assert len(seen) == 2, "both replicas should have served items"
    by_pid = {w["pid"]: w for w in plan.values()}
    cores = []
    for pid, r in seen.items():
        assert r["affinity"] == list(by_pid[pid]["cores"])
        assert r["omp"] == "1" and r["openblas"] == "1"
        assert r["blas_threads"] and set(r["blas_threads"]) == {1}
        assert r["ctx"][0] == "Budget" and r["ctx"][2] == 1
        cores += r["affinity"]
    assert sorted(cores) == [0, 1]
    assert "Budget" in plan_text and "threads" in plan_text


@needs_two_cores
def test_oversubscribed_stages_share_all_cores_with_capped_threads():
    graph = pp.Parallel(
        a=S.Budget().options(name="a", cpus=2, replicas=1), b=S.Budget().options(name="b", cpus=2, replicas=1)
    )
    with pp.Engine(graph, cores=[0, 1]) as engine:
        out = engine.run(0, timeout=60)
    for branch in ("a", "b"):
        assert out[branch]["affinity"] == [0, 1]
        assert out[branch]["omp"] == "1"
        assert set(out[branch]["blas_threads"]) == {1}


@needs_two_cores
def test_opencv_imported_in_setup_gets_the_thread_budget_not_the_cores_it_sees():
    """Two stages asking for 2 cpus share cores 0-1 with 1 thread each: OpenCV would size its
    pool from the 2 cores it may run on."""
    graph = pp.Parallel(a=S.OpenCVThreads().options(name="a", cpus=2), b=S.OpenCVThreads().options(name="b", cpus=2))
    with pp.Engine(graph, cores=[0, 1]) as engine:
        assert engine.run(0, timeout=60) == {"a": 1, "b": 1}
    with pp.Engine(S.OpenCVThreads().options(cpus=2), cores=[0, 1]) as engine:
        assert engine.run(0, timeout=60) == 2


def test_gpus_become_cuda_visible_devices():
    graph = pp.Parallel(gpu=_Env().options(name="gpu", gpus=[[3, 5]]), cpu=_Env().options(name="cpu"))
    with pp.Engine(graph) as engine:
        out = engine.run(0, timeout=60)
    assert out["gpu"] == ("3,5", (3, 5))
    assert out["cpu"] == (os.environ.get("CUDA_VISIBLE_DEVICES"), ())


class _Env(pp.Stage):
    def process(self, item):
        return os.environ.get("CUDA_VISIBLE_DEVICES"), pp.current().gpus


def test_auto_plan_measures_and_replicates_the_heavy_stage(tmp_path):
    log = tmp_path / "setups.log"
    graph = pp.Pipeline(_Light(str(log)), _Heavy(str(log)))
    with pp.Engine(graph, cpus="auto", warmup=[1, 2, 3], cores=[0, 1]) as engine:
        replicas = {}
        for w in engine.workers():
            replicas[w["stage"]] = replicas.get(w["stage"], 0) + 1
        assert engine.run(5, timeout=60)["item"] == 5
    assert replicas == {"light": 1, "heavy": 2}
    setups = log.read_text().split()
    assert sorted(setups) == ["heavy", "heavy", "light"], "measured workers must be kept, not reloaded"


class _Light(pp.Stage):
    name = "light"

    def __init__(self, log):
        self.log = log

    def setup(self):
        with open(self.log, "a") as f:
            f.write(f"{self.name}\n")

    def process(self, item):
        return item


class _Heavy(_Light):
    name = "heavy"

    def process(self, item):
        total = 0
        for i in range(300_000):
            total += i
        return {"item": item, "total": total}
