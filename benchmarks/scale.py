"""How parapipe's costs grow with the work: items, journal, worker starts, stages; Pool beside it.

One table per measure, parapipe and `multiprocessing.Pool` alternating in the same run where
Pool has an equivalent:
  * parent memory: RSS growth of the parent while ``map`` streams N items with 1 KB results
    (also with ``gc.disable()``: a reference cycle per item shows there), vs ``Pool.imap``;
  * journal: a journaled ``map`` of cheap items: items/s, bytes written per item (the SQLite
    file and its WAL), and the time to resume (rerun the finished map: every item read back);
  * worker start: seconds from creating the engine (or Pool) to the worker's ``setup()``
    (initializer) running, per start method;
  * stages: the round trip of one no-op item through a pipeline of 1-16 stages, and per stage.

Usage: python benchmarks/scale.py [--quick] [--items 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

import parapipe as pp

sys.path.insert(0, str(Path(__file__).parent))
from _common import Figure, PeakRss, machine_line, parse_args, plot_table, print_table, round_trips

MIB = 2**20


def kilobyte(n: int) -> bytes:
    return bytes([n % 256]) * 1024


def noop(x: Any) -> Any:
    return x


class Stamped(pp.Stage):
    """Answers the wall-clock time its ``setup()`` ran."""

    def setup(self) -> None:
        self.at = time.time()

    def process(self, item: Any) -> float:
        return self.at


_started_at = 0.0


def _stamp() -> None:
    global _started_at
    _started_at = time.time()


def _started(_: Any) -> float:
    return _started_at


@contextlib.contextmanager
def _collector(enabled: bool) -> Iterator[None]:
    gc.collect()
    if not enabled:
        gc.disable()
    try:
        yield
    finally:
        gc.enable()


def memory_rows(n: int, workers: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with pp.Engine(pp.stage(kilobyte, replicas=workers)) as engine:
        for _ in engine.map(range(min(n, 50_000))):  # warm: the allocator reaches its working size
            pass
        for gc_on in (True, False):
            with _collector(gc_on), PeakRss() as rss:
                t0 = time.perf_counter()
                for _ in engine.map(range(n)):
                    pass
                wall = time.perf_counter() - t0
            rows.append(("parapipe map", "on" if gc_on else "off", n, round(rss.grown_mib, 1), round(n / wall)))
    with mp.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap(kilobyte, range(min(n, 50_000)), chunksize=1024):
            pass
        for gc_on in (True, False):
            with _collector(gc_on), PeakRss() as rss:
                t0 = time.perf_counter()
                for _ in pool.imap(kilobyte, range(n), chunksize=1024):
                    pass
                wall = time.perf_counter() - t0
            rows.append(
                ("Pool.imap (chunksize 1024)", "on" if gc_on else "off", n, round(rss.grown_mib, 1), round(n / wall))
            )
    return rows


def _written_bytes() -> int:
    io = psutil.Process().io_counters()
    return int(getattr(io, "write_chars", io.write_bytes))


def journal_rows(sizes: list[int]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with pp.Engine(pp.stage(noop)) as engine, tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            list(engine.map(range(n)))
            plain = n / (time.perf_counter() - t0)
            path = Path(tmp) / f"journal-{n}.sqlite"
            written = _written_bytes()
            t0 = time.perf_counter()
            list(engine.map(range(n), journal=path))
            rate = n / (time.perf_counter() - t0)
            written = _written_bytes() - written
            t0 = time.perf_counter()
            list(engine.map(range(n), journal=path))
            resume = time.perf_counter() - t0
            rows.append((n, round(plain), round(rate), round(plain / rate), round(written / n), round(resume, 3)))
    return rows


def start_rows(repeat: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for method in ("spawn", "forkserver"):
        ours, pools = [], []
        for _ in range(repeat):  # alternating, so both see the same machine
            t0 = time.time()
            with pp.Engine(Stamped(), start_method=method) as engine:
                ours.append(engine.run(0) - t0)
            t0 = time.time()
            with mp.get_context(method).Pool(1, initializer=_stamp) as pool:
                pools.append(pool.apply(_started, (0,)) - t0)
        rows.append((method, round(statistics.median(ours) * 1e3), round(statistics.median(pools) * 1e3)))
    return rows


def stage_rows(counts: list[int], calls: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for k in counts:
        graph = pp.Pipeline(*(pp.stage(noop, name=f"s{i}") for i in range(k)))
        with pp.Engine(graph) as engine:
            ours = round_trips(engine.run, calls)[0]
        with mp.get_context("spawn").Pool(k) as pool:

            def chain(i: int, pool: Any = pool, k: int = k) -> Any:
                for _ in range(k):
                    i = pool.apply(noop, (i,))
                return i

            theirs = round_trips(chain, calls)[0]
        rows.append((k, round(ours), round(ours / k), round(theirs), round(theirs / k)))
    return rows


FIGURE = Figure("round trip of one no-op item through N stages (µs, lower is better)", (),
                 ("parapipe round trip µs", "Pool chain µs"), x="stages")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute, not several")
    parser.add_argument("--items", type=int, default=None, help="items of the memory table")
    parser.add_argument("--workers", type=int, default=2)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    quick = args.quick
    items = args.items or (200_000 if quick else 1_000_000)
    notes = [machine_line()]
    print_table(
        ["system", "cycle collector", "items", "parent growth MiB (peak)", "items/s"],
        memory_rows(items, args.workers),
        title="parent memory: map with 1 KB results",
        notes=notes,
    )
    print()
    print_table(
        ["items", "plain map items/s", "journaled items/s", "slowdown x", "bytes written per item", "resume s"],
        journal_rows([1_000, 10_000] if quick else [1_000, 10_000, 100_000]),
        title="journaled map of a no-op stage (Pool has no journal: the plain map is the baseline)",
        notes=["bytes written: every write() of the parent during the journaled map (journal, WAL, pipes), per item"],
    )
    print()
    print_table(
        ["start method", "parapipe ms to setup()", "Pool ms to initializer"],
        start_rows(3 if quick else 5),
        title="worker start: creating the engine or Pool until the worker's setup runs (median)",
    )
    print()
    stages = stage_rows([1, 2, 4, 8, 16], 300 if quick else 1000)
    headers = ["stages", "parapipe round trip µs", "per stage µs", "Pool chain µs", "Pool per stage µs"]
    print_table(
        headers, stages, title="round trip of one no-op item through N stages (p50); Pool: N apply() calls in a row"
    )
    if args.plot:
        plot_table(FIGURE, headers, stages, args.plot)


if __name__ == "__main__":
    main()
