"""A stand-in for ``pynvml`` (nvidia-ml-py): the calls parapipe makes, answering from plain data."""

from __future__ import annotations

import types
from dataclasses import dataclass, field


class NVMLError(Exception):
    pass


@dataclass
class FakeDevice:
    name: str = "Fake GPU"
    total: int = 16 * 2**30
    memory: dict[int, int] = field(default_factory=dict)
    """pid -> bytes used."""
    util: list[tuple[int, float, int]] = field(default_factory=list)
    """(pid, SM %, timestamp in microseconds) samples."""


def fake_nvml(devices: list[FakeDevice]) -> types.ModuleType:
    """A module object to put in ``sys.modules["pynvml"]``; ``module.asked`` logs the timestamps
    passed to ``nvmlDeviceGetProcessUtilization``."""
    mod = types.ModuleType("pynvml")
    mod.asked = []  # type: ignore[attr-defined]

    def process_utilization(handle: FakeDevice, since: int) -> list[types.SimpleNamespace]:
        mod.asked.append(since)  # type: ignore[attr-defined]
        samples = [types.SimpleNamespace(pid=p, smUtil=u, timeStamp=t) for p, u, t in handle.util if t > since]
        if not samples:
            raise NVMLError("not found")
        return samples

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: devices[i]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: h.name.encode()  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h.total, used=sum(h.memory.values()))  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in h.memory.items()
    ]
    mod.nvmlDeviceGetProcessUtilization = process_utilization  # type: ignore[attr-defined]
    return mod
