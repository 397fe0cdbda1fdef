"""Tests for the CPU/GPU planning functions; no processes are started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parapipe.errors import ConfigError
from parapipe.plantree import compact_ids, format_plan
from parapipe.resources import (
    StageRequest,
    WorkerBudget,
    plan_latency,
    plan_static,
    plan_throughput,
    usable_cores,
)
from parapipe.resources import _cgroup_cpu_limit as cgroup_cpu_limit
from parapipe.worker.spawn import gpu_env, thread_env

AUDIO_COSTS = {"asr": 0.63, "spk": 0.06, "pitch": 0.05}


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the affinity mask is cores 0-7 and no env cap is set."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("PARAPIPE_MAX_CPUS", raising=False)


# --------------------------------------------------------------------------- cgroup / usable cores


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000"}, None),
        ({"cpu.max": "150000 100000"}, 2),
        ({"cpu.max": "200000 100000"}, 2),
        ({"cpu.max": "10000 100000"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"}, 3),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 1),
        ({}, None),
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    assert cgroup_cpu_limit(tmp_path) == expected


@pytest.mark.usefixtures("eight_cores")
def test_usable_cores_without_limits_is_the_affinity(tmp_path: Path) -> None:
    assert usable_cores(cgroup_root=tmp_path) == tuple(range(8))


@pytest.mark.usefixtures("eight_cores")
def test_usable_cores_keeps_the_first_cores_allowed_by_the_quota(tmp_path: Path) -> None:
    _write(tmp_path, "cpu.max", "150000 100000")
    assert usable_cores(cgroup_root=tmp_path) == (0, 1)


@pytest.mark.usefixtures("eight_cores")
def test_env_cap_limits_further(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "cpu.max", "400000 100000")
    monkeypatch.setenv("PARAPIPE_MAX_CPUS", "3")
    assert usable_cores(cgroup_root=tmp_path) == (0, 1, 2)
    monkeypatch.setenv("PARAPIPE_MAX_CPUS", "16")
    assert usable_cores(cgroup_root=tmp_path) == (0, 1, 2, 3)


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_env_cap_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("PARAPIPE_MAX_CPUS", bad)
    with pytest.raises(ConfigError, match="PARAPIPE_MAX_CPUS"):
        usable_cores(cgroup_root=tmp_path)


def test_usable_cores_on_this_machine_is_a_subset_of_the_affinity() -> None:
    cores = usable_cores()
    assert cores
    assert set(cores) <= set(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- static plan


def test_fitting_requests_get_disjoint_pinned_cores() -> None:
    reqs = [StageRequest("asr", 2, 2), StageRequest("spk", 1, 1), StageRequest("pitch", 1, 3)]
    budgets = plan_static(reqs, range(10))
    assert [(b.stage, b.replica) for b in budgets] == [
        ("asr", 0),
        ("asr", 1),
        ("spk", 0),
        ("pitch", 0),
    ]
    assert [len(b.cores) for b in budgets] == [2, 2, 1, 3]
    assert [b.threads for b in budgets] == [2, 2, 1, 3]
    used = [c for b in budgets for c in b.cores]
    assert len(used) == len(set(used))
    assert set(used) <= set(range(10))


def test_exact_fit_uses_every_core_once() -> None:
    budgets = plan_static([StageRequest("a", 2, 2)], [4, 5, 6, 7])
    assert [b.cores for b in budgets] == [(4, 5), (6, 7)]


def test_oversubscribed_shares_all_cores_and_keeps_threads_within_them() -> None:
    reqs = [StageRequest("asr", 2, 4), StageRequest("spk", 1, 2)]
    budgets = plan_static(reqs, range(4))
    assert all(b.cores == (0, 1, 2, 3) for b in budgets)
    assert sum(b.threads for b in budgets) <= 4
    # floor(4 * 4 / 10) = 1 for asr; floor(2 * 4 / 10) = 0 for spk, raised to 1
    assert [b.threads for b in budgets] == [1, 1, 1]


def test_oversubscribed_shares_follow_the_requests() -> None:
    budgets = plan_static([StageRequest("big", 1, 12), StageRequest("small", 1, 4)], range(8))
    assert [b.threads for b in budgets] == [6, 2]


def test_rounding_up_small_shares_does_not_overshoot_the_cores() -> None:
    # The naive formula gives big floor(40/13) = 3 plus 1 for each small: 6 threads on 4 cores.
    reqs = [StageRequest("big", 1, 10), StageRequest("small", 3, 1)]
    budgets = plan_static(reqs, range(4))
    assert sum(b.threads for b in budgets) == 4
    assert all(b.threads == 1 for b in budgets)


def test_more_workers_than_cores_get_one_thread_each() -> None:
    budgets = plan_static([StageRequest("a", 5, 3)], range(2))
    assert len(budgets) == 5
    assert all(b.threads == 1 and b.cores == (0, 1) for b in budgets)


def test_gpus_follow_their_replica() -> None:
    reqs = [StageRequest("asr", 2, 1, gpus=((0,), (1, 2))), StageRequest("spk", 1, 1)]
    assert [b.gpus for b in plan_static(reqs, range(4))] == [(0,), (1, 2), ()]


@pytest.mark.parametrize(
    "make",
    [
        lambda: StageRequest("a", 0, 1),
        lambda: StageRequest("a", 1, 0),
        lambda: StageRequest("a", 2, 1, gpus=((0,),)),
        lambda: WorkerBudget("a", 0, 0, (0,)),
    ],
)
def test_invalid_requests_are_config_errors(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]


def test_no_cores_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        plan_static([StageRequest("a", 1, 1)], [])


# --------------------------------------------------------------------------- environment


def test_thread_env_caps_every_pool() -> None:
    env = thread_env(3)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        assert env[var] == "3"
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    assert "KMP_BLOCKTIME" not in env
    assert "OMP_WAIT_POLICY" not in env


def test_thread_env_rejects_zero() -> None:
    with pytest.raises(ConfigError):
        thread_env(0)


def test_gpu_env() -> None:
    assert gpu_env((0, 1)) == {"CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpu_env(()) == {}
    with pytest.raises(ConfigError):
        gpu_env((-1,))


# --------------------------------------------------------------------------- throughput plan


def test_throughput_replicates_the_bottleneck() -> None:
    plan = plan_throughput(AUDIO_COSTS, 2)
    assert plan == {"asr": (2, 1), "spk": (1, 1), "pitch": (1, 1)}


def test_throughput_gives_threads_to_a_stage_that_cannot_replicate() -> None:
    plan = plan_throughput(AUDIO_COSTS, 2, max_replicas={"asr": 1})
    assert plan == {"asr": (1, 2), "spk": (1, 1), "pitch": (1, 1)}


def test_throughput_shares_follow_costs_and_never_exceed_the_cpu_bound() -> None:
    ncores = 16
    plan = plan_throughput(AUDIO_COSTS, ncores)
    total_cost = sum(AUDIO_COSTS.values())
    for stage, (replicas, threads) in plan.items():
        share = ncores * AUDIO_COSTS[stage] / total_cost
        assert threads == 1
        assert replicas <= max(1, -(-share // 1))  # at most ceil of its proportional share
    assert plan["asr"][0] > plan["spk"][0] >= 1
    rate = min(r * t / AUDIO_COSTS[s] for s, (r, t) in plan.items())
    assert rate >= ncores / total_cost * 0.999  # the stages keep up with the cores


def test_throughput_with_one_core_per_stage_adds_nothing() -> None:
    assert plan_throughput({"a": 1.0, "b": 1.0}, 2) == {"a": (1, 1), "b": (1, 1)}


def test_throughput_capped_stage_with_several_replicas_grows_threads_per_replica() -> None:
    assert plan_throughput({"a": 1.0}, 8, max_replicas={"a": 2}) == {"a": (2, 4)}


def test_throughput_free_stages_get_one_worker() -> None:
    assert plan_throughput({"a": 0.0, "b": 0.0}, 4) == {"a": (1, 1), "b": (1, 1)}


@pytest.mark.parametrize(
    ("costs", "ncores", "caps"),
    [
        ({"a": -1.0}, 2, None),
        ({"a": float("nan")}, 2, None),
        ({"a": 1.0}, 0, None),
        ({"a": 1.0}, 2, {"b": 1}),
        ({"a": 1.0}, 2, {"a": 0}),
    ],
)
def test_throughput_bad_input(costs: dict[str, float], ncores: int, caps: dict[str, int] | None) -> None:
    with pytest.raises(ConfigError):
        plan_throughput(costs, ncores, max_replicas=caps)


# --------------------------------------------------------------------------- latency plan

AUDIO_TREE = (
    "seq",
    [("stage", "decode"), ("par", [("stage", "asr"), ("stage", "spk"), ("stage", "pitch")])],
)


def test_latency_sequence_uses_all_cores_and_dominant_branch_gets_them_all() -> None:
    # asr costs more than spk and pitch together: splitting cores would slow the critical branch
    plan = plan_latency(AUDIO_TREE, {"decode": 0.1, **AUDIO_COSTS}, 4)
    assert plan == {"decode": (1, 4), "asr": (1, 4), "spk": (1, 1), "pitch": (1, 1)}


def test_latency_par_splits_by_cost_when_no_branch_dominates() -> None:
    tree = ("par", [("stage", s) for s in "abc"])
    assert plan_latency(tree, {"a": 1.0, "b": 1.0, "c": 1.5}, 7) == {"a": (1, 2), "b": (1, 2), "c": (1, 3)}


def test_latency_par_branch_weight_is_its_critical_path() -> None:
    tree = ("par", [("stage", "a"), ("seq", [("stage", "b"), ("stage", "c")])])
    plan = plan_latency(tree, {"a": 1.0, "b": 1.0, "c": 2.0}, 8)
    assert plan == {"a": (1, 1), "b": (1, 8), "c": (1, 8)}


def test_latency_more_branches_than_cores_get_one_thread_each() -> None:
    tree = ("par", [("stage", s) for s in "abc"])
    assert plan_latency(tree, dict.fromkeys("abc", 1.0), 2) == dict.fromkeys("abc", (1, 1))


@pytest.mark.parametrize(
    "tree",
    [
        ("stage", "missing"),
        ("seq", [("stage", "a"), ("stage", "a")]),
        ("loop", [("stage", "a")]),
    ],
)
def test_latency_bad_tree(tree: object) -> None:
    with pytest.raises(ConfigError):
        plan_latency(tree, {"a": 1.0}, 2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rendering


def test_compact_ids() -> None:
    assert compact_ids([0, 1, 2, 3, 6]) == "0-3,6"
    assert compact_ids([5, 1, 2]) == "1-2,5"
    assert compact_ids([]) == "-"


def test_format_plan() -> None:
    rows = [
        (WorkerBudget("asr", 0, 4, (0, 1, 2, 3), (0,)), 4321),
        (WorkerBudget("spk", 0, 1, (6,)), None),
    ]
    lines = format_plan(rows).splitlines()
    assert lines[0].split() == ["stage", "replica", "pid", "cores", "threads", "gpus"]
    assert lines[2].split() == ["asr", "0", "4321", "0-3", "4", "0"]
    assert lines[3].split() == ["spk", "0", "-", "6", "1", "-"]
    assert lines[2].index("0-3") == lines[0].index("cores")
