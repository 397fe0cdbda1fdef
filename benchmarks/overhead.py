"""Per-item overhead of a no-op task: parapipe beside the usual process pools, in one run.

Each system gets the same number of worker processes and the same no-op function. Three
numbers per system:
  * round trip p50/p99: one call at a time, submit then wait for the result (latency floor);
  * submits/s: N calls submitted back to back, then all results awaited;
  * map items/s: the system's own map over N items (chunking is each system's own choice).
Rates are the best of 3 to 30 runs (as many as fit in 2 s), for every system alike. The last row is the floor: the same
calls over raw pipes to 2 hand-written worker loops (pickle, call, pickle back, nothing else),
what any pool built on pipes and pickle can at best approach on this machine.

Usage: python benchmarks/overhead.py [--workers 2] [--items 20000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import pickle
import platform
import time
from collections.abc import Callable
from typing import Any

from _common import Figure, parse_args, plot_table, round_trips

import parapipe as pp


def noop(x: Any) -> Any:
    return x


def _rate(run: Callable[[], Any], n: int, repeat: int = 3, budget: float = 2.0) -> float:
    """Items per second, the best of at least ``repeat`` runs, and of as many more as fit in
    ``budget`` seconds, up to 30 (the same rule for every system). A no-op map of 20,000 items
    takes ~1.5 ms, so three runs of it measure this shared machine's noise more than the map:
    its best of three moved between 5 and 15 million items/s from run to run."""
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < repeat or (runs < 30 and time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return n / best


def bench_parapipe(workers: int, items: int, calls: int) -> dict[str, float]:
    with pp.Engine(pp.stage(noop, replicas=workers)) as engine:
        p50, p99 = round_trips(lambda i: engine.submit(i).result(), calls, warmup=200)
        submits = _rate(lambda: [f.result() for f in [engine.submit(i) for i in range(items)]], items)
        list(engine.map(range(items)))
        mapped = _rate(lambda: list(engine.map(range(items))), items)
    return {"p50": p50, "p99": p99, "submits": submits, "map": mapped}


def bench_pool(workers: int, items: int, calls: int) -> dict[str, float]:
    with mp.get_context("spawn").Pool(workers) as pool:
        p50, p99 = round_trips(lambda i: pool.apply_async(noop, (i,)).get(), calls, warmup=200)
        submits = _rate(lambda: [r.get() for r in [pool.apply_async(noop, (i,)) for i in range(items)]], items)
        mapped = _rate(lambda: pool.map(noop, range(items)), items)
    return {"p50": p50, "p99": p99, "submits": submits, "map": mapped}


def bench_executor(factory: Callable[[], Any]) -> Callable[[int, int, int], dict[str, float]]:
    def run(workers: int, items: int, calls: int) -> dict[str, float]:
        with factory() as ex:
            p50, p99 = round_trips(lambda i: ex.submit(noop, i).result(), calls, warmup=200)
            submits = _rate(lambda: [f.result() for f in [ex.submit(noop, i) for i in range(items)]], items)
            mapped = _rate(lambda: list(ex.map(noop, range(items))), items)
        return {"p50": p50, "p99": p99, "submits": submits, "map": mapped}

    return run


def bench_mpire(workers: int, items: int, calls: int) -> dict[str, float]:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=workers, start_method="spawn") as pool:
        p50, p99 = round_trips(lambda i: pool.apply_async(noop, (i,)).get(), calls, warmup=200)
        submits = _rate(lambda: [r.get() for r in [pool.apply_async(noop, (i,)) for i in range(items)]], items)
    with WorkerPool(n_jobs=workers, start_method="spawn") as pool:
        mapped = _rate(lambda: pool.map(noop, range(items)), items)
    return {"p50": p50, "p99": p99, "submits": submits, "map": mapped}


def bench_ray(workers: int, items: int, calls: int) -> dict[str, float]:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        class Actor:
            def call(self, x: Any) -> Any:
                return x

        actors = [Actor.remote() for _ in range(workers)]
        ray.get([a.call.remote(0) for a in actors])
        p50, p99 = round_trips(lambda i: ray.get(actors[0].call.remote(i)), calls, warmup=200)
        submits = _rate(lambda: ray.get([actors[i % workers].call.remote(i) for i in range(items)]), items)
        task = ray.remote(noop)
        mapped = _rate(lambda: ray.get([task.remote(i) for i in range(items)]), items)
    finally:
        ray.shutdown()
    return {"p50": p50, "p99": p99, "submits": submits, "map": mapped}


def _raw_worker(conn: Any) -> None:
    """The floor's worker loop: a list of items in, their results out; an empty message stops it."""
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send_bytes(pickle.dumps(list(map(noop, pickle.loads(data))), protocol=5))


def bench_floor(workers: int, items: int, calls: int) -> dict[str, float]:
    """Round trips and a map over raw pipes (no futures, no queue, no supervision): a map cuts
    its input into 4 chunks per worker, as `Pool.map` does, and reads them back in order."""
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(workers)]
    procs = [ctx.Process(target=_raw_worker, args=(child,), daemon=True) for _, child in pipes]
    for p in procs:
        p.start()
    conns = [parent for parent, _ in pipes]

    def call(i: int) -> Any:
        conns[0].send_bytes(pickle.dumps([i], protocol=5))
        return pickle.loads(conns[0].recv_bytes())[0]

    def mapped() -> list[Any]:
        size = -(-items // (4 * workers))
        chunks = [list(range(k, min(k + size, items))) for k in range(0, items, size)]
        for k, chunk in enumerate(chunks):
            conns[k % workers].send_bytes(pickle.dumps(chunk, protocol=5))
        out: list[Any] = []
        for k in range(len(chunks)):
            out.extend(pickle.loads(conns[k % workers].recv_bytes()))
        return out

    try:
        p50, p99 = round_trips(call, calls, warmup=200)
        mapped()
        rate = _rate(mapped, items)
    finally:
        for conn in conns:
            conn.send_bytes(b"")
        for p in procs:
            p.join(10)
    return {"p50": p50, "p99": p99, "submits": float("nan"), "map": rate}


def _systems(workers: int) -> list[tuple[str, Callable[[int, int, int], dict[str, float]]]]:
    spawn = mp.get_context("spawn")
    systems = [
        ("parapipe", bench_parapipe),
        ("multiprocessing.Pool", bench_pool),
        ("ProcessPoolExecutor", bench_executor(lambda: cf.ProcessPoolExecutor(workers, mp_context=spawn))),
    ]
    optional = [
        ("loky", "loky", bench_executor(lambda: __import__("loky").get_reusable_executor(workers))),
        ("mpire", "mpire", bench_mpire),
        ("ray (actor; map = tasks)", "ray", bench_ray),
    ]
    for label, module, fn in optional:
        try:
            __import__(module)
        except ImportError:
            print(f"(skipping {label}: pip install {module})")
            continue
        systems.append((label, fn))
    systems.append((FLOOR, bench_floor))
    return systems


FLOOR = "floor: raw pipes, no framework"

FIGURE = Figure("the cost of one no-op call (round trip: lower is better; submits/s: higher)",
                 ("system",), ("round trip p50 µs", "submits/s"))  # fmt: skip


def _count(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=2_000)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    cores = len(os.sched_getaffinity(0))
    print(
        f"# overhead: no-op task, {args.workers} workers, {cores} cores seen, "
        f"Python {platform.python_version()}, {args.items} items, {args.calls} round trips\n"
    )
    rows = []
    for label, fn in _systems(args.workers):
        r = fn(args.workers, args.items, args.calls)
        rows.append((label, r))
        print(f"  measured {label}", flush=True)
    base = dict(rows)["multiprocessing.Pool"]
    headers = ["system", "round trip p50 µs", "p99 µs", "submits/s", "map items/s", "map vs Pool.map"]
    table = [[label, f"{r['p50']:.0f}", f"{r['p99']:.0f}", _count(r["submits"]), f"{r['map']:,.0f}",
              f"{r['map'] / base['map']:.2f}x"] for label, r in rows]  # fmt: skip
    print("\n| " + " | ".join(headers) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for cells in table:
        print("| " + " | ".join(cells) + " |")
    if args.plot:
        plot_table(FIGURE, headers, table, args.plot)


if __name__ == "__main__":
    main()
