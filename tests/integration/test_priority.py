"""A stage's ``nice`` inside its real workers: every thread, from boot, after a SIGKILL, and
the auto plan's lowering of a side branch applied to workers that are already running."""

from __future__ import annotations

import os
import signal

import parapipe as pp
from parapipe.priority import SLACK_NICE

from . import _stages as S


def test_every_thread_of_a_worker_runs_at_its_stage_s_nice_even_after_a_sigkill():
    with pp.Engine(S.Niceness().options(nice=7)) as engine:
        first = engine.run(1, timeout=60)
        assert first["threads"] >= 2 and first["nices"] == [7]  # the setup() thread inherited it
        os.kill(first["pid"], signal.SIGKILL)
        again = engine.run(2, timeout=60)  # runs on the replacement, or waits for it
    assert again["pid"] != first["pid"] and again["nices"] == [7]


def test_the_auto_plan_lowers_the_running_side_branch_and_leaves_the_critical_one():
    graph = pp.Parallel(
        heavy=S.Niceness("heavy", cost=0.05).options(cpus="auto"),
        light=S.Niceness("light").options(cpus="auto"),
        kept=S.Niceness("kept").options(cpus="auto", nice=0),
    )
    with pp.Engine(graph, warmup=[0, 1, 2], cores=[0, 1]) as engine:
        pids_before = {w["stage"]: w["pid"] for w in engine.workers()}
        out = engine.run(3, timeout=60)
        plan = engine.plan()
        rows = {w["stage"]: w["nice"] for w in engine.workers()}
    assert out["heavy"]["nices"] == [0] and out["kept"]["nices"] == [0]
    assert out["light"]["nices"] == [SLACK_NICE] and out["light"]["threads"] >= 2
    assert out["light"]["pid"] == pids_before["light"], "lowered in place: its model stays loaded"
    assert plan.splitlines()[0].split()[-1] == "nice"
    assert rows == {"heavy": 0, "light": SLACK_NICE, "kept": 0}


def test_a_pipeline_without_a_split_keeps_every_worker_at_normal_priority():
    graph = pp.Pipeline(S.Niceness("a", cost=0.02).options(cpus="auto"), S.Niceness("b").options(cpus="auto"))
    with pp.Engine(graph, warmup=[0, 1], cores=[0, 1]) as engine:
        out = engine.run(2, timeout=60)
    assert out["nices"] == [0]


def test_engine_cpus_auto_plans_every_stage_s_nice_afresh_for_its_mode():
    """As with ``cpus``, the engine-wide "auto" replaces what the stages say (here a nice 7 that
    a throughput plan such as the audio app's would have baked in): a latency plan lowers none."""
    graph = pp.Parallel(heavy=S.Niceness("heavy", cost=0.05), light=S.Niceness("light").options(nice=7))
    for mode, expected in (("latency", 0), ("throughput", SLACK_NICE)):
        with pp.Engine(graph, cpus="auto", mode=mode, warmup=[0, 1, 2], cores=[0, 1]) as engine:
            rows = {w["stage"]: w["nice"] for w in engine.workers()}
            out = engine.run(3, timeout=60)
        assert rows == {"heavy": 0, "light": expected}, mode
        assert out["light"]["nices"] == [expected], mode
