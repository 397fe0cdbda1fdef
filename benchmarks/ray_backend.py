"""parapipe local vs parapipe on Ray vs the same no-op work written by hand as Ray actors.

One run, one table: items/s of a map, round trip p50/p99 of one item at a time, cold start
(engine start, or actor creation and its first answer). The Ray instance is started once,
before any row, and its start is reported apart: every Ray row would pay it.

    python benchmarks/ray_backend.py [--items 3000] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Figure, add_plot_options, machine_line, plot_page, plot_table, print_table

import parapipe as pp


def noop(x: Any) -> Any:
    return x


class HandActor:
    """What a Ray user writes: one actor, one method per item."""

    def process(self, x: Any) -> Any:
        return x


def _quantiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def bench_parapipe(backend: str, items: int, calls: int) -> tuple[float, float, float, float]:
    t0 = time.perf_counter()
    with pp.Engine(pp.stage(noop), backend=backend) as engine:
        cold = time.perf_counter() - t0
        engine.run(0)
        t1 = time.perf_counter()
        n = sum(1 for _ in engine.map(range(items)))
        rate = n / (time.perf_counter() - t1)
        trips = []
        for i in range(calls):
            t = time.perf_counter()
            engine.run(i)
            trips.append(time.perf_counter() - t)
    return (rate, *_quantiles(trips), cold)


def bench_hand_ray(items: int, calls: int) -> tuple[float, float, float, float]:
    import ray

    t0 = time.perf_counter()
    actor = ray.remote(num_cpus=1)(HandActor).remote()
    ray.get(actor.process.remote(0))
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = len(ray.get([actor.process.remote(i) for i in range(items)]))
    rate = n / (time.perf_counter() - t1)
    trips = []
    for i in range(calls):
        t = time.perf_counter()
        ray.get(actor.process.remote(i))
        trips.append(time.perf_counter() - t)
    ray.kill(actor)
    return (rate, *_quantiles(trips), cold)


FIGURE = Figure("a no-op graph: parapipe local and on Ray vs hand-written Ray actors", ("no-op graph",),
                 ("items/s (map)", "round trip p50 ms"), log=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=300)
    add_plot_options(parser)
    args = parser.parse_args()
    if args.plot_from:
        plot_page(FIGURE, args.plot_from, args.plot)
        return
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    rows = {
        "parapipe local": bench_parapipe("local", args.items, args.calls),
        "parapipe on Ray": bench_parapipe("ray", args.items, args.calls),
        "hand-written Ray actor": bench_hand_ray(args.items, args.calls),
    }
    ray.shutdown()
    hand = rows["hand-written Ray actor"]
    table = [
        (
            name,
            round(rate),
            round(p50, 3),
            round(p99, 3),
            round(cold, 2),
            round(rate / hand[0], 2),
            round(p50 / hand[1], 2),
        )
        for name, (rate, p50, p99, cold) in rows.items()
    ]
    headers = ["no-op graph", "items/s (map)", "round trip p50 ms", "p99 ms", "cold start s", "x hand items/s",
               "x hand p50"]  # fmt: skip
    if args.plot:
        plot_table(FIGURE, headers, table, args.plot)
    print_table(
        headers,
        table,
        title="parapipe on Ray vs hand-written Ray actors",
        notes=[machine_line(), f"ray.init (local, once, not in any row): {ray_start:.2f} s",
               f"{args.items} items per map, {args.calls} sequential round trips; one replica / one actor"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
