"""NVML is optional: without it nothing GPU-related appears; with it (a fake module here) workers
and stages get GPU memory and utilisation, and discovery gets the devices' memory."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from parapipe import gpus, nvml
from parapipe.gpus import GpuDevice
from parapipe.worker.gpucap import cap_memory
from parapipe.worker.stats import add_gpu_figures, gpu_totals

from ._fake_nvml import FakeDevice, fake_nvml

GiB = 2**30


@pytest.fixture(autouse=True)
def _fresh_nvml() -> Iterator[None]:
    nvml.forget()
    yield
    nvml.forget()


def _rows() -> list[dict[str, object]]:
    return [
        {"stage": "m", "replica": 0, "pid": 101, "gpus": (0,)},
        {"stage": "m", "replica": 1, "pid": 102, "gpus": (1,)},
        {"stage": "cpu", "replica": 0, "pid": 103, "gpus": ()},
    ]


def test_without_nvml_rows_and_stats_get_no_gpu_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    rows = add_gpu_figures(_rows())
    assert all("gpu_memory_bytes" not in row for row in rows)
    assert gpu_totals(rows) == {}
    assert nvml.devices() is None and nvml.usage([101]) == {}


def test_a_driverless_nvml_counts_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = fake_nvml([])

    def fail() -> None:
        raise broken.NVMLError("driver not loaded")

    broken.nvmlInit = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert nvml.library() is None and nvml.usage([1]) == {}


def test_with_nvml_workers_with_gpus_get_memory_and_utilisation(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        FakeDevice(memory={101: 2 * GiB, 103: GiB}, util=[(101, 30.0, 10), (101, 50.0, 20)]),
        FakeDevice(memory={102: GiB, 101: GiB}),
    ]
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(devices))
    rows = add_gpu_figures(_rows())
    assert (rows[0]["gpu_memory_bytes"], rows[0]["gpu_util_pct"]) == (3 * GiB, 40.0)
    assert (rows[1]["gpu_memory_bytes"], rows[1]["gpu_util_pct"]) == (GiB, None)
    assert "gpu_memory_bytes" not in rows[2], "a worker without a GPU shows no GPU figures"
    assert gpu_totals(rows) == {"gpu_memory_bytes": 4 * GiB, "gpu_util_pct": 40.0}


def test_utilisation_reads_only_new_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    device = FakeDevice(memory={7: GiB}, util=[(7, 80.0, 5)])
    fake = fake_nvml([device])
    reader = nvml.NvmlReader(fake)
    assert reader.read()[7].util_pct == 80.0
    monkeypatch.setattr(nvml, "MIN_INTERVAL", 0.0)
    device.util.append((7, 20.0, 9))
    assert reader.read()[7].util_pct == 20.0
    assert fake.asked == [0, 5]  # type: ignore[attr-defined]
    assert reader.read()[7].util_pct is None, "no sample since the last reading"


def test_discovery_with_nvml_reads_memory_and_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_nvml([FakeDevice("A", 80 * GiB), FakeDevice("B", 40 * GiB), FakeDevice("C", 40 * GiB)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus.discover() == (GpuDevice(0, 80 * GiB, "A"), GpuDevice(1, 40 * GiB, "B"), GpuDevice(2, 40 * GiB, "C"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [d.index for d in gpus.discover()] == [0, 2]


# --------------------------------------------------------------------------- the worker's cap


class _FakeCuda:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.caps: list[tuple[float, int]] = []

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return 2

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.caps.append((fraction, device))


def test_the_cap_is_set_on_every_visible_device_when_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = _FakeCuda(available=True)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert cap_memory(0.25) is True
    assert cuda.caps == [(0.25, 0), (0.25, 1)]


@pytest.mark.parametrize("fraction, available", [(None, True), (0.5, False)])
def test_no_cap_without_a_fraction_or_without_cuda(
    monkeypatch: pytest.MonkeyPatch, fraction: float | None, available: bool
) -> None:
    cuda = _FakeCuda(available)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert cap_memory(fraction) is False and cuda.caps == []


def test_the_cap_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert cap_memory(0.5) is False
    assert "torch" not in sys.modules
