"""Helpers shared by the benchmark scripts: markdown tables, machine facts and a CPU meter.

Every table a benchmark prints says how many cores it saw, because every number in it depends
on that. `CpuMeter` measures one timed section: wall seconds, CPU seconds of this process plus
the worker processes named, and the CPU that *other* processes on the machine used meanwhile,
so a table taken on a busy machine says so.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

__all__ = ["CpuMeter", "blas_info", "cores_seen", "machine_line", "markdown_table", "print_table"]


def cores_seen() -> int:
    """Cores this process may run on (its affinity mask), which is what the OS will schedule on."""
    return len(os.sched_getaffinity(0))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned, everything else left-aligned."""
    rows = [[_cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in rows) if rows else False for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "".join(f"|{'-' * (w + 1)}:" if num else f"|{'-' * (w + 2)}" for w, num in zip(widths, numeric, strict=True))
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, notes: Sequence[str] = ()
) -> None:
    """Print an optional title, the core count seen, any notes, then the markdown table."""
    if title:
        print(f"### {title}\n")
    print(f"cores seen: {cores_seen()} (os.sched_getaffinity)")
    for note in notes:
        print(note)
    print()
    print(markdown_table(headers, rows))


def blas_info() -> str:
    """numpy version and its native thread pools as threadpoolctl sees them in this process."""
    import numpy as np
    from threadpoolctl import threadpool_info

    pools = [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '?')}, "
        f"{p.get('num_threads')} threads by default)"
        for p in threadpool_info()
    ]
    return f"numpy {np.__version__}; " + ("; ".join(pools) or "no native thread pool loaded")


def machine_line() -> str:
    """Python version, CPU model and the load average when the benchmark started."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"Python {platform.python_version()}; {cpu}; load average at start {load}"


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system seconds of every thread of one process (not of its children)."""
    t = proc.cpu_times()
    return t.user + t.system


def _busy_seconds(cores: Sequence[int]) -> float:
    """CPU seconds any process (or the hypervisor, as steal) kept the given cores busy, since boot."""
    per_cpu = psutil.cpu_times(percpu=True)
    total = 0.0
    for c in cores:
        t = per_cpu[c]
        total += t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
        total += getattr(t, "steal", 0)
    return total


class CpuMeter:
    """Wall and CPU time of one timed section, for this process plus the worker pids given.

    Take the worker pids while the workers are alive and leave them alive until the section
    ends: the kernel forgets a process's CPU time once it has been reaped. CPU time of a process
    covers all its threads, so OpenBLAS threads spinning while they wait for work count too.

    Attributes (after the ``with`` block):
        wall: seconds between entering and leaving the block.
        cpu: CPU seconds used by this process and the workers during the block.
        utilisation: ``cpu / (wall * cores)``: 1.0 means every core did our work all the time.
        foreign: share of the cores' time that other processes (or steal) took meanwhile.
    """

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self._procs = [psutil.Process()] + [psutil.Process(p) for p in pids]
        self._cores = sorted(os.sched_getaffinity(0))
        self.wall = self.cpu = self.utilisation = self.foreign = 0.0

    def __enter__(self) -> CpuMeter:
        self._cpu0 = sum(_cpu_seconds(p) for p in self._procs)
        self._busy0 = _busy_seconds(self._cores)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = sum(_cpu_seconds(p) for p in self._procs) - self._cpu0
        others = _busy_seconds(self._cores) - self._busy0 - self.cpu
        capacity = self.wall * len(self._cores)
        self.utilisation = self.cpu / capacity
        self.foreign = max(0.0, others) / capacity


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True
