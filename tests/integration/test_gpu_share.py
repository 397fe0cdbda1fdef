"""Replicas sharing GPUs get the device, environment and memory cap the plan gave them; none of
this needs a GPU (device ids are given with ``gpu_devices``, CUDA is never initialised)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

import parapipe as pp
from parapipe import nvml

from ..unit._fake_nvml import FakeDevice, fake_nvml
from . import _gpu_stages as G

GiB = 2**30


def test_each_replica_gets_its_device_its_share_and_the_cuda_environment():
    graph = pp.Parallel(
        a=G.Where().options(name="a", gpus=0.5, replicas=2),
        b=G.Where().options(name="b", gpu_memory="4GiB"),
        cpu=G.Where().options(name="cpu"),
    )
    with pp.Engine(graph, gpu_devices={3: "16GiB", 5: "16GiB"}) as engine:
        seen = {w["pid"]: w for w in engine.workers()}
        outs = [engine.run(i, timeout=60) for i in range(6)]
        plan = engine.plan()
    for out in outs:
        for name in ("a", "b"):
            got, planned = out[name], seen[out[name]["pid"]]
            assert got["gpus"] == planned["gpus"] and len(got["gpus"]) == 1
            assert got["visible"] == str(got["gpus"][0]) and got["order"] == "PCI_BUS_ID"
            assert got["device"] == "cuda"
        assert out["a"]["fraction"] == 0.5
        assert out["b"]["fraction"] == 0.25, "4 GiB of a 16 GiB device"
        assert out["cpu"]["gpus"] == () and out["cpu"]["fraction"] is None and out["cpu"]["device"] == "cpu"
    a_devices = sorted(w["gpus"] for w in seen.values() if w["stage"] == "a")
    assert a_devices == [(3,), (5,)], "two halves are spread over both devices"
    assert "gpu 3  16.0 GiB  replicas:" in plan and "a#0 (0.5)" in plan


def test_over_subscription_refuses_to_start():
    engine = pp.Engine(G.Where().options(gpus=0.5, replicas=3), gpu_devices=[0])
    with pytest.raises(pp.ConfigError, match="do not fit"):
        engine.start()


def test_a_torch_worker_is_capped_before_setup():
    with pp.Engine(G.TorchUser().options(gpus=0.25), gpu_devices=[0]) as engine:
        assert engine.run(0, timeout=60) == [(0.25, 0)]


@pytest.fixture
def nvml_sees(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeDevice]]:
    devices = [FakeDevice()]
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(devices))
    monkeypatch.setattr(nvml, "MIN_INTERVAL", 0.0)  # the test changes what NVML says between readings
    nvml.forget()
    yield devices
    nvml.forget()


def test_stats_and_workers_show_nvml_figures_of_gpu_workers_only(nvml_sees: list[FakeDevice]):
    graph = pp.Parallel(gpu=G.Where().options(name="gpu", gpus=0.5), cpu=G.Where().options(name="cpu"))
    with pp.Engine(graph, gpu_devices=[0]) as engine:
        pids = {w["stage"]: w["pid"] for w in engine.workers()}
        nvml_sees[0].memory.update({pids["gpu"]: 3 * GiB, pids["cpu"]: GiB})
        nvml_sees[0].util.append((pids["gpu"], 42.0, 1))
        engine.run(0, timeout=60)
        stats, workers = engine.stats(), {w["stage"]: w for w in engine.workers()}
    assert (stats["gpu"]["gpu_memory_bytes"], stats["gpu"]["gpu_util_pct"]) == (3 * GiB, 42.0)
    assert workers["gpu"]["gpu_memory_bytes"] == 3 * GiB
    assert "gpu_memory_bytes" not in stats["cpu"] and "gpu_memory_bytes" not in workers["cpu"]
