"""Helpers shared by the benchmark scripts: markdown tables, their figures, machine facts and a CPU meter.

Every table a benchmark prints says how many cores it saw, because every number in it depends
on that. `CpuMeter` measures one timed section: wall seconds, CPU seconds of this process plus
the worker processes named, and the CPU that *other* processes on the machine used meanwhile,
so a table taken on a busy machine says so.

Each script's `Figure` says how its table is drawn; ``--plot PATH`` writes the figure of the
table just measured, and ``--plot-from PAGE --plot PATH`` draws the table published in a page of
docs/benchmarks/ without measuring anything (matplotlib, from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "CpuMeter",
    "Figure",
    "add_plot_options",
    "blas_info",
    "cores_seen",
    "machine_line",
    "markdown_table",
    "plot_page",
    "plot_table",
    "print_table",
]


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


@dataclass(frozen=True)
class Figure:
    """How one benchmark table is drawn: one panel per column in ``values``.

    Without ``x``, each row is a horizontal bar named by its ``label`` columns, in table order,
    parapipe's rows in colour. With ``x``, each distinct ``label`` is a line over the ``x``
    column's values (taken as categories, in table order). Rows whose label or x is in ``drop``
    and cells that are not numbers are left out.
    """

    title: str
    label: tuple[str, ...]
    values: tuple[str, ...]
    x: str | None = None
    log: bool = False
    drop: tuple[str, ...] = ()


def add_plot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", type=Path, metavar="PATH", help="also draw the table to PATH (.svg or .png)")
    parser.add_argument("--plot-from", type=Path, metavar="PAGE",
                        help="measure nothing: draw the table published in PAGE to --plot")  # fmt: skip


def parse_args(
    parser: argparse.ArgumentParser, figure: Figure, argv: Sequence[str] | None = None
) -> argparse.Namespace | None:
    """The script's options plus ``--plot``/``--plot-from``; None when ``--plot-from`` already
    drew the published table (the script then measures nothing)."""
    add_plot_options(parser)
    args = parser.parse_args(argv)
    if args.plot_from:
        plot_page(figure, args.plot_from, args.plot)
        return None
    return args


def round_trips(call: Callable[[int], Any], n: int, warmup: int = 100) -> tuple[float, float]:
    """Median and 99th percentile, in µs, of ``n`` sequential ``call(i)``, after ``warmup`` calls
    that are not counted (worker start-up, first imports)."""
    for i in range(min(warmup, n)):
        call(i)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def report(
    figure: Figure, headers: Sequence[str], rows: Sequence[Sequence[Any]], plot: Path | None, **table: Any
) -> None:
    """Print the script's one table, and draw it to ``plot`` when asked."""
    if plot:
        plot_table(figure, headers, rows, plot)
    print_table(headers, rows, **table)


class PeakRss:
    """The peak RSS, sampled every ``period`` s in a thread, of this process, and with
    ``children`` of every process below it too (summed); ``grown_mib`` is peak minus start."""

    def __init__(self, *, children: bool = False, period: float = 0.005) -> None:
        self._me = psutil.Process()
        self._children = children
        self._period = period
        self._stop = threading.Event()
        self.start = self.peak = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())

    @property
    def grown_mib(self) -> float:
        return (self.peak - self.start) / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self._period):  # sampling, not synchronising
            self.peak = max(self.peak, self._sample())

    def _sample(self) -> int:
        total = 0
        for p in [self._me, *(self._me.children(recursive=True) if self._children else ())]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a child that just ended
                continue
        return total


def plot_page(figure: Figure, page: Path, path: Path | None) -> int:
    """Draw the first table in a markdown page that has every column the figure needs."""
    if path is None:
        raise SystemExit("--plot-from needs --plot PATH: where to write the figure")
    needed = {*figure.label, *figure.values, *([figure.x] if figure.x else [])}
    for headers, rows in _markdown_tables(page.read_text(encoding="utf-8")):
        if needed <= set(headers):
            plot_table(figure, headers, rows, path)
            return 0
    raise SystemExit(f"{page} has no table with the columns {sorted(needed)}")


def plot_table(figure: Figure, headers: Sequence[str], rows: Iterable[Sequence[Any]], path: Path) -> None:
    """Write the figure of one table to ``path``; the format follows its suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "parapipe", "font.size": 9})
    col = {h: i for i, h in enumerate(headers)}
    table = [[_cell(v).strip() for v in row] for row in rows]
    table = [r for r in table if not {r[col[c]] for c in (*figure.label, figure.x) if c} & set(figure.drop)]
    panels = len(figure.values)
    names = [" · ".join(r[col[c]] for c in figure.label) for r in table]
    size = (3.2 * panels + 3.2, 0.32 * len(table) + 1.1) if figure.x is None else (4.2 * panels, 3.6)
    fig, axes = plt.subplots(1, panels, figsize=size, squeeze=False, layout="constrained")
    for ax, value in zip(axes[0], figure.values, strict=True):
        numbers = [_number(r[col[value]]) for r in table]
        if figure.x is None:
            _bars(ax, names, numbers, first=ax is axes[0][0])
        else:
            _lines(ax, names, [r[col[figure.x]] for r in table], numbers)
            ax.set_xlabel(figure.x)
        ax.set_title(value, fontsize=9)
        if figure.log:
            ax.set_xscale("log") if figure.x is None else ax.set_yscale("log")
        ax.spines[["top", "right"]].set_visible(False)
    if figure.x is not None:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(figure.title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None, dpi=120)
    plt.close(fig)


def _bars(ax: Any, names: list[str], numbers: list[float | None], *, first: bool) -> None:
    shown = [(n, v) for n, v in zip(names, numbers, strict=True) if v is not None]
    ys = range(len(shown))
    colours = ["#2563eb" if "parapipe" in n else "#98a2b3" for n, _ in shown]
    ax.barh(list(ys), [v for _, v in shown], color=colours)
    ax.set_yticks(list(ys), [n for n, _ in shown] if first else [""] * len(shown))
    ax.invert_yaxis()
    for y, (_, v) in zip(ys, shown, strict=True):
        ax.annotate(f"{v:,.6g}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)


def _lines(ax: Any, names: list[str], xs: list[str], numbers: list[float | None]) -> None:
    categories = list(dict.fromkeys(xs))
    for name in dict.fromkeys(names):
        rows = zip(names, xs, numbers, strict=True)
        points = [(categories.index(x), v) for n, x, v in rows if n == name and v is not None]
        if points:
            style = "-" if "parapipe" in name else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3, label=name)
    ax.set_xticks(range(len(categories)), categories)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("x%"))
    except ValueError:
        return None


def _markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table in a markdown text: its headers and its rows of cell texts."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2 and re.fullmatch(r"[\s:|-]+", "|".join(block[1])):
            tables.append((block[0], block[2:]))
        block = []
    return tables


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
