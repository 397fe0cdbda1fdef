"""The GPU planner: packing shares and memory onto devices, refusing what does not fit, discovery."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterator

import pytest

import parapipe as pp
from parapipe import gpus, nvml
from parapipe.errors import ConfigError
from parapipe.gpus import GpuDevice, GpuRequest, GpuSlot, as_devices, attach, plan_gpus
from parapipe.plantree import format_plan, format_tree
from parapipe.resources import WorkerBudget
from parapipe.worker.spawn import gpu_env

GiB = 2**30
TWO_80G = (GpuDevice(0, 80 * GiB), GpuDevice(1, 80 * GiB))


def _used(slots: dict[str, list[GpuSlot]], requests: list[GpuRequest], index: int) -> float:
    share = {r.stage: r.share or r.whole for r in requests}
    return sum(share[stage] for stage, rows in slots.items() for slot in rows if index in slot.ids)


def test_four_quarter_replicas_fill_one_device() -> None:
    slots = plan_gpus([GpuRequest("m", 4, share=0.25)], TWO_80G[:1])
    assert slots["m"] == [GpuSlot((0,), 0.25)] * 4


def test_shares_are_spread_over_devices_and_never_exceed_one() -> None:
    requests = [GpuRequest("a", 3, share=0.5), GpuRequest("b", 2, share=0.25)]
    slots = plan_gpus(requests, TWO_80G)
    assert [_used(slots, requests, i) for i in (0, 1)] == [1.0, 1.0]
    assert {s.ids for s in slots["a"]} == {(0,), (1,)}, "balanced: both devices get a half"


def test_first_fit_rescues_what_spreading_cannot_place() -> None:
    """Spreading puts 0.5 and 0.5 on two devices, then 0.4 + 0.3 + 0.3 no longer fit; first-fit does."""
    requests = [GpuRequest("a", 2, share=0.5), GpuRequest("b", 1, share=0.4), GpuRequest("c", 2, share=0.3)]
    slots = plan_gpus(requests, TWO_80G)
    assert all(_used(slots, requests, i) <= 1.0 + 1e-9 for i in (0, 1))


def test_ten_tenths_fit_despite_float_rounding() -> None:
    assert len(plan_gpus([GpuRequest("m", 10, share=0.1)], TWO_80G[:1])["m"]) == 10


def test_memory_is_packed_and_becomes_the_fraction() -> None:
    slots = plan_gpus([GpuRequest("m", 3, memory=20 * GiB)], [GpuDevice(0, 40 * GiB), GpuDevice(1, 40 * GiB)])
    assert sorted(s.ids for s in slots["m"]) == [(0,), (0,), (1,)] or sorted(s.ids for s in slots["m"]) == [
        (0,), (1,), (1,)]  # fmt: skip
    assert {s.fraction for s in slots["m"]} == {0.5}


def test_a_share_also_takes_its_share_of_memory() -> None:
    """0.5 of an 80 GiB device holds 40 GiB, so a 50 GiB replica no longer fits beside two halves."""
    with pytest.raises(ConfigError, match="do not fit"):
        plan_gpus([GpuRequest("a", 1, share=0.5), GpuRequest("b", 1, memory=50 * GiB)], TWO_80G[:1])


def test_whole_devices_are_exclusive() -> None:
    slots = plan_gpus([GpuRequest("big", 1, whole=2), GpuRequest("small", 1, share=0.5)],
                      [*TWO_80G, GpuDevice(2, 80 * GiB)])  # fmt: skip
    assert slots["big"] == [GpuSlot((0, 1), None)]
    assert slots["small"] == [GpuSlot((2,), 0.5)]


@pytest.mark.parametrize(
    "requests",
    [
        [GpuRequest("m", 3, share=0.5)],
        [GpuRequest("m", 1, whole=2)],
        [GpuRequest("m", 1, memory=81 * GiB)],
        [GpuRequest("a", 1, whole=1), GpuRequest("b", 1, share=0.1)],
    ],
)
def test_over_subscription_is_refused_naming_the_stages(requests: list[GpuRequest]) -> None:
    with pytest.raises(ConfigError, match=r"do not fit.*Lower replicas, gpus or gpu_memory"):
        plan_gpus(requests, TWO_80G[:1])


def test_no_devices_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"'m'.*none was found.*gpu_devices"):
        plan_gpus([GpuRequest("m", 1, share=0.5)], [])


def test_memory_on_devices_of_unknown_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="memory of device"):
        plan_gpus([GpuRequest("m", 1, memory=GiB)], [GpuDevice(0)])
    with pytest.raises(ConfigError, match="unknown"):
        plan_gpus([GpuRequest("m", 1, pinned=((0,),), memory=GiB)], [GpuDevice(0)])


def test_pinned_ids_are_taken_as_given() -> None:
    slots = plan_gpus([GpuRequest("m", 3, pinned=((3,), (5,), (3,)))], [])
    assert [s.ids for s in slots["m"]] == [(3,), (5,), (3,)]
    assert slots["m"][0].fraction is None


# --------------------------------------------------------------------------- stage options


def test_stage_options_accept_shares_counts_and_memory() -> None:
    s = pp.stage(len, gpus=0.25, gpu_memory="8GiB")
    assert gpus.request_of(s, 2) == GpuRequest("len", 2, share=0.25, memory=8 * GiB)
    assert gpus.request_of(pp.stage(len, gpus=2), 1) == GpuRequest("len", 1, whole=2)
    assert gpus.request_of(pp.stage(len, gpus=[0, 1]), 3).pinned == ((0,), (1,), (0,))
    assert pp.stage(len, gpus=0.5).gpus_for(0) == ()


@pytest.mark.parametrize("opts", [{"gpus": 1.5}, {"gpus": 0}, {"gpus": -0.5}, {"gpus": True}, {"gpu_memory": "lots"},
                                  {"gpu_memory": 0}])  # fmt: skip
def test_bad_gpu_options_are_config_errors(opts: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        pp.stage(len, **opts)


# --------------------------------------------------------------------------- budgets


def _budgets(*shape: tuple[str, int]) -> list[WorkerBudget]:
    return [WorkerBudget(name, r, 1, (0,)) for name, n in shape for r in range(n)]


def test_attach_gives_each_replica_its_device_and_fraction() -> None:
    stages = [pp.stage(len, name="a", gpus=0.5), pp.stage(abs, name="b"), pp.stage(min, name="c", gpus=[[2, 3]])]
    out = attach(_budgets(("a", 2), ("b", 1), ("c", 1)), stages, lambda: TWO_80G)
    assert [(b.stage, b.gpus, b.gpu_fraction) for b in out] == [
        ("a", (0,), 0.5), ("a", (1,), 0.5), ("b", (), None), ("c", (2, 3), None)]  # fmt: skip


def test_attach_never_discovers_for_a_cpu_or_pinned_graph() -> None:
    def boom() -> tuple[GpuDevice, ...]:
        raise AssertionError("discovery must not run")

    stages = [pp.stage(len, name="a"), pp.stage(abs, name="b", gpus=[0])]
    budgets = _budgets(("a", 1), ("b", 1))
    assert attach(budgets, stages, boom) == budgets


def test_the_plan_table_and_device_lines_show_shares() -> None:
    budgets = attach(_budgets(("a", 2)), [pp.stage(len, name="a", gpus=0.25)], lambda: TWO_80G[:1])
    assert "0 (0.25)" in format_plan([(b, None) for b in budgets])
    assert gpus.format_devices(TWO_80G[:1], budgets) == "gpu 0  80.0 GiB  replicas: a#0 (0.25), a#1 (0.25)"


def test_as_devices_reads_ids_and_sizes() -> None:
    assert as_devices([1, 0]) == (GpuDevice(0), GpuDevice(1))
    assert as_devices({0: "16GiB"}) == (GpuDevice(0, 16 * GiB),)
    for bad in ([0, 0], [-1], {0: 0}):
        with pytest.raises(ConfigError):
            as_devices(bad)  # type: ignore[arg-type]


def test_gpu_env_names_devices_in_nvml_order() -> None:
    assert gpu_env((2,)) == {"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


# --------------------------------------------------------------------------- discovery


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    nvml.forget()
    yield
    nvml.forget()


def test_discovery_without_nvml_reads_cuda_visible_devices(no_nvml: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,bad,4")
    assert gpus.discover() == (GpuDevice(2), GpuDevice(3))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.discover() == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    with pytest.raises(ConfigError, match="UUID"):
        gpus.discover()


def test_discovery_without_nvml_or_env_asks_torch(no_nvml: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = types.ModuleType("torch")
    fake.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    fake.cuda = types.SimpleNamespace(device_count=lambda: 2)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert gpus.discover() == (GpuDevice(0), GpuDevice(1))


def test_the_plan_tree_shows_a_worker_s_share_and_memory() -> None:
    row = {"stage": "m", "replica": 0, "pid": 7, "cores": (0,), "threads": 1, "gpus": (0,), "gpu_fraction": 0.25,
           "gpu_memory_bytes": 3 * GiB}  # fmt: skip
    assert "gpus 0 (0.25 of memory)  3.0 GiB used" in format_tree({"stage": "m"}, [row])
