"""Which stages yield the cores (`parapipe.priority`), and the ``nice`` option's rules."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import parapipe as pp
from parapipe import autotune
from parapipe.graph import as_graph, latency_tree
from parapipe.plantree import format_plan, format_tree
from parapipe.priority import SLACK_NICE, lower_priority, slack_stages
from parapipe.resources import WorkerBudget


def _f(x: Any) -> Any:
    return x


def _s(name: str) -> pp.Stage:
    """A stage named ``name``: one function serves them all, each name its own stage."""
    return pp.stage(_f, name=name)


def _tree(node: Any) -> Any:
    return latency_tree(as_graph(node))


def test_a_pipeline_without_a_split_has_no_slack_stage() -> None:
    tree = _tree(pp.Pipeline(_s("f"), _s("g")))
    assert slack_stages(tree, {"f": 1.0, "g": 0.01}) == set()


def test_the_lighter_branches_of_a_split_are_slack_and_what_feeds_or_follows_it_is_not() -> None:
    graph = pp.Pipeline(_s("f"), pp.Parallel(a=_s("g"), b=_s("h")), _s("k"))
    assert slack_stages(_tree(graph), {"f": 0.01, "g": 1.6, "h": 0.2, "k": 0.01}) == {"h"}
    assert slack_stages(_tree(graph), {"f": 0.01, "g": 0.1, "h": 0.2, "k": 0.01}) == {"g"}


def test_a_branch_is_weighed_by_its_whole_chain_and_slack_reaches_into_it() -> None:
    """b's chain (0.5 + 0.6) outweighs a's single 1.0 stage, so a is slack, and a split inside
    the critical branch has its own slack side."""
    inner = pp.Parallel(x=_s("h"), y=_s("k"))
    graph = pp.Parallel(a=_s("f"), b=pp.Pipeline(_s("g"), inner))
    assert slack_stages(_tree(graph), {"f": 1.0, "g": 0.5, "h": 0.6, "k": 0.1}) == {"f", "k"}


class _Auto(pp.Stage):
    cpus = "auto"

    def __init__(self, name: str, nice: int | None = None) -> None:
        self.name = name
        self.nice = nice

    def process(self, item: Any) -> Any:
        return item


def _nices(budgets: list[WorkerBudget]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for b in budgets:
        out.setdefault(b.stage, set()).add(b.nice)
    return out


def test_the_throughput_plan_lowers_the_planned_side_branches_only() -> None:
    whisper, speaker, gender = _Auto("whisper"), _Auto("speaker"), _Auto("gender", nice=0)
    fixed = pp.stage(_f, name="fixed", cpus=1)
    graph = pp.Parallel(whisper=whisper, speaker=speaker, gender=gender, fixed=fixed)
    costs = {"whisper": 1.6, "speaker": 0.1, "gender": 0.2, "fixed": 0.1}
    stages = [whisper, speaker, gender, fixed]
    throughput = autotune.plan(stages, graph, costs, (0, 1), "throughput")
    assert _nices(throughput) == {"whisper": {0}, "speaker": {SLACK_NICE}, "gender": {0}, "fixed": {0}}
    latency = autotune.plan(stages, graph, costs, (0, 1), "latency")
    assert _nices(latency) == {"whisper": {0}, "speaker": {0}, "gender": {0}, "fixed": {0}}


def test_a_stage_s_own_nice_wins_in_every_plan() -> None:
    heavy, light = _Auto("heavy", nice=3), _Auto("light", nice=19)
    graph = pp.Parallel(heavy=heavy, light=light)
    for mode in ("throughput", "latency"):
        budgets = autotune.plan([heavy, light], graph, {"heavy": 1.0, "light": 0.1}, (0, 1), mode)
        assert _nices(budgets) == {"heavy": {3}, "light": {19}}


@pytest.mark.parametrize("bad", [-1, 20, 2.5, True, "10"])
def test_a_bad_nice_is_a_config_error(bad: Any) -> None:
    with pytest.raises(pp.ConfigError, match="nice"):
        pp.stage(_f, nice=bad)
    with pytest.raises(pp.ConfigError, match="nice"):
        pp.stage(_f).options(nice=bad)


def test_a_budget_outside_the_nice_range_is_refused() -> None:
    with pytest.raises(pp.ConfigError, match="nice must be 0 to 19"):
        WorkerBudget("s", 0, 1, (0,), nice=20)


def test_the_plan_table_shows_a_nice_column_only_when_a_worker_is_lowered() -> None:
    normal = [(WorkerBudget("a", 0, 1, (0, 1)), None)]
    assert "nice" not in format_plan(normal)
    lowered = format_plan([*normal, (WorkerBudget("b", 0, 1, (0, 1), nice=10), None)]).splitlines()
    assert lowered[0].split()[-1] == "nice"
    assert [line.split()[-1] for line in lowered[2:]] == ["0", "10"]


def test_the_plan_tree_names_a_lowered_worker_s_nice() -> None:
    row = {"replica": 0, "pid": 7, "cores": (0, 1), "threads": 1}
    tree = format_tree({"parallel": {"a": {"stage": "a"}, "b": {"stage": "b"}}},
                       [{**row, "stage": "a", "nice": 0}, {**row, "stage": "b", "nice": 10}])  # fmt: skip
    a_line, b_line = (line for line in tree.splitlines() if "replica 0" in line)
    assert "nice" not in a_line and b_line.endswith("nice 10")


@pytest.fixture
def idle_child() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of ours with a second thread, blocked on its stdin until the test ends."""
    code = "import sys, threading; threading.Thread(target=sys.stdin.read).start(); print(flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    child.stdout.readline()  # its second thread exists
    yield child
    child.communicate(b"", timeout=30)


def _thread_nices(pid: int) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")]


def test_lower_priority_reaches_every_thread_and_never_raises_a_nicer_one(idle_child: Any) -> None:
    lower_priority(5, idle_child.pid)
    nices = _thread_nices(idle_child.pid)
    assert len(nices) >= 2 and set(nices) == {5}
    lower_priority(12, idle_child.pid)
    lower_priority(7, idle_child.pid)  # asks for more CPU than it has: a no-op, never an error
    assert set(_thread_nices(idle_child.pid)) == {12}


def test_the_audio_throughput_plan_lets_whisper_have_the_cores() -> None:
    from parapipe.audio import analysis_graph
    from parapipe.graph import stages

    nices = {s.stage_name: s.nice for s in stages(analysis_graph(plan="throughput", cores=2))}
    assert nices == {"decode": None, "vad": None, "transcribe": None, "speaker": SLACK_NICE,
                     "gender_age": SLACK_NICE}  # fmt: skip
    assert {s.nice for s in stages(analysis_graph(plan="latency", cores=2))} == {None}
