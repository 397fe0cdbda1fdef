"""What NVML says about the GPUs: which devices exist, and how much memory and compute each worker
process uses. Optional: without ``nvidia-ml-py`` (``pip install "parapipe[gpu]"``), or without a
driver, every function here answers "nothing", and the engine shows no GPU figures.

Read in the parent, never in a worker: NVML answers per process id for every process on the
device, so one reader serves all workers, and a worker stays free of one more native library.
Process ids are the host's: in a container without the host PID namespace NVML's pids do not
match ours, and the figures stay empty (docs/gpu.md).
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuUsage", "NvmlReader", "library", "usage"]

MIN_INTERVAL = 0.5
"""Seconds a reading is reused: the dashboard, /metrics and stats() may all ask within one poll."""


@dataclass(frozen=True)
class GpuUsage:
    """One process's use of the GPUs, summed over the devices it has a context on."""

    memory_bytes: int
    util_pct: float | None
    """Share of one device's SM time this process used in the last interval (NVML's samples)."""


@functools.cache
def library() -> Any | None:
    """The initialised ``pynvml`` module, or None where it is not installed or finds no driver."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    return nvml


def devices() -> list[tuple[int, int, str]] | None:
    """``(index, total memory in bytes, name)`` of every device NVML sees; None without NVML."""
    nvml = library()
    if nvml is None:
        return None
    found = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        found.append((index, int(nvml.nvmlDeviceGetMemoryInfo(handle).total), _text(name)))
    return found


class NvmlReader:
    """Per-process memory and utilisation, read at most every `MIN_INTERVAL` seconds.

    Utilisation comes as samples since the last reading (``nvmlDeviceGetProcessUtilization``
    takes the last timestamp seen), so the reader keeps that timestamp per device and reports
    the mean of the new samples: the recent load, not the load since the process started.
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._seen: dict[int, int] = {}
        self._read_at = -MIN_INTERVAL
        self._last: dict[int, GpuUsage] = {}

    def read(self) -> dict[int, GpuUsage]:
        """``{pid: GpuUsage}`` for every process with a context on any device."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= MIN_INTERVAL:
                self._last = self._read_all()
                self._read_at = now
            return self._last

    def _read_all(self) -> dict[int, GpuUsage]:
        nvml = self._nvml
        memory: dict[int, int] = {}
        util: dict[int, list[float]] = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for proc in _processes(nvml, handle):
                memory[proc.pid] = memory.get(proc.pid, 0) + int(proc.usedGpuMemory or 0)
            for pid, pct in self._utilisation(index, handle):
                util.setdefault(pid, []).append(pct)
        return {
            pid: GpuUsage(used, round(sum(util[pid]) / len(util[pid]), 1) if pid in util else None)
            for pid, used in memory.items()
        }

    def _utilisation(self, index: int, handle: Any) -> list[tuple[int, float]]:
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(handle, self._seen.get(index, 0))
        except self._nvml.NVMLError:  # NOT_FOUND when no process ran since the last reading
            return []
        if samples:
            self._seen[index] = max(int(s.timeStamp) for s in samples)
        return [(int(s.pid), float(s.smUtil)) for s in samples]


def _processes(nvml: Any, handle: Any) -> list[Any]:
    try:
        return list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except nvml.NVMLError:
        return []


@functools.cache
def _reader() -> NvmlReader | None:
    nvml = library()
    return None if nvml is None else NvmlReader(nvml)


def usage(pids: Iterable[int | None]) -> dict[int, GpuUsage]:
    """The GPU use of these processes, those NVML knows of; ``{}`` without NVML or without pids."""
    wanted = {pid for pid in pids if pid is not None}
    reader = _reader() if wanted else None
    if reader is None:
        return {}
    return {pid: found for pid, found in reader.read().items() if pid in wanted}


def forget() -> None:
    """Drop the loaded library and reader, so the next call looks for NVML again (tests)."""
    library.cache_clear()
    _reader.cache_clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
