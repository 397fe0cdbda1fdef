"""What survives when workers die: 1,000 items, 5 of which kill the worker that runs them.

Two scenarios, each run through every system in one go:
  * transient: the 5 items kill their worker the first time only (an OOM kill, a flaky driver);
    a retry succeeds. The right answer is 1,000 results.
  * poison: the 5 items kill their worker every time. The right answer is 995 results and 5
    precise errors, with the other items unaffected.

Systems: parapipe (retries=2), concurrent.futures.ProcessPoolExecutor (the pool breaks:
BrokenProcessPool), and multiprocessing.Pool (the pool silently replaces the worker and the
lost task never completes: bpo-22393; we give map_async a deadline and count what came back).

Usage: python benchmarks/faults.py [--items 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import tempfile
import time
from typing import Any

from _common import Figure, parse_args, plot_table

import parapipe as pp

CRASHERS = (100, 300, 500, 700, 900)
_MARKERS = os.environ.get("PARAPIPE_FAULTS_DIR", "")


def work(item: tuple[int, str]) -> int:
    """Kill this worker on a crasher item (once per marker dir in the transient scenario)."""
    n, mode = item
    if n in CRASHERS:
        marker = os.path.join(_MARKERS, f"{mode}-{n}")
        if mode == "poison" or not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(137)
    total = 0
    for i in range(2_000):
        total += i * n
    return total


def _expected(n: int) -> int:
    return sum(i * n for i in range(2_000))


def run_parapipe(items: list[tuple[int, str]], workers: int) -> dict[str, Any]:
    with pp.Engine(pp.stage(work, replicas=workers), retries=2) as engine:
        out = list(engine.map(items, return_exceptions=True, max_inflight=4 * workers))
    return _score(items, out)


def run_executor(items: list[tuple[int, str]], workers: int) -> dict[str, Any]:
    out: list[Any] = []
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futures = [ex.submit(work, item) for item in items]
        for f in futures:
            try:
                out.append(f.result())
            except Exception as exc:  # BrokenProcessPool for every item still pending
                out.append(exc)
    return _score(items, out)


def run_pool(items: list[tuple[int, str]], workers: int, deadline: float = 20.0) -> dict[str, Any]:
    pool = mp.get_context("spawn").Pool(workers)
    try:
        result = pool.map_async(work, items, chunksize=1)
        try:
            out = result.get(deadline)
        except mp.TimeoutError:
            out = [TimeoutError("no answer: map_async never completes after a worker died")] * len(items)
    finally:
        pool.terminate()
        pool.join()
    return _score(items, out)


def _score(items: list[tuple[int, str]], out: list[Any]) -> dict[str, Any]:
    correct = sum(1 for (n, _), r in zip(items, out, strict=True) if r == _expected(n))
    errors = [r for r in out if isinstance(r, BaseException)]
    precise = sum(1 for e in errors if isinstance(e, pp.WorkerDied))
    return {"correct": correct, "errors": len(errors), "precise": precise}


FIGURE = Figure("items, some of which kill their worker: correct results returned", ("scenario", "system"),
                 ("correct results",))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    logging.getLogger("parapipe").setLevel(logging.ERROR)  # the expected restarts would flood the table
    print(
        f"# faults: {args.items} items, {len(CRASHERS)} of them kill their worker, "
        f"{args.workers} workers, {len(os.sched_getaffinity(0))} cores seen\n"
    )
    headers = ["scenario", "system", "correct results", "errors", "precise WorkerDied errors", "wall s"]
    print("| " + " | ".join(headers) + " |")
    print("|---|---|---:|---:|---:|---:|")
    table = []
    systems = [("parapipe", run_parapipe), ("ProcessPoolExecutor", run_executor), ("multiprocessing.Pool", run_pool)]
    for scenario in ("transient", "poison"):
        for label, fn in systems:
            with tempfile.TemporaryDirectory() as markers:
                os.environ["PARAPIPE_FAULTS_DIR"] = markers  # read by spawned workers at import
                items = [(i, scenario) for i in range(args.items)]
                t0 = time.perf_counter()
                r = fn(items, args.workers)
                wall = time.perf_counter() - t0
            table.append([scenario, label, r["correct"], r["errors"], r["precise"], f"{wall:.1f}"])
            print("| " + " | ".join(map(str, table[-1])) + " |", flush=True)
    if args.plot:
        plot_table(FIGURE, headers, table, args.plot)


if __name__ == "__main__":
    main()
