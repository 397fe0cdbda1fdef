"""A 32 MiB float32 array to a worker and back: MB/s per system, measured in one run.

MB/s is the array's size divided by the round-trip time (send, identity function, receive), the
median of ``--repeat`` round trips after one warm-up. Every system gets one worker process (the
parapipe pipeline row: one per stage, the array going stage to stage without the parent).

Usage: python benchmarks/payload.py [--mib 32] [--repeat 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import parapipe as pp

sys.path.insert(0, str(Path(__file__).parent))
from _common import Figure, machine_line, parse_args, report


def echo(a: Any) -> Any:
    return a


def _median_seconds(call: Callable[[], Any], repeat: int) -> float:
    call()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = call()
        samples.append(time.perf_counter() - t0)
        del out
    return statistics.median(samples)


def parapipe_echo(a: np.ndarray, repeat: int) -> float:
    with pp.Engine(pp.stage(echo)) as engine:
        return _median_seconds(lambda: engine.run(a), repeat)


def parapipe_pipeline_echo(a: np.ndarray, repeat: int) -> float:
    """Three echo stages in a row: each hands the array to the next without the parent."""
    graph = pp.Pipeline(*(pp.stage(echo, name=f"echo{i}") for i in range(3)))
    with pp.Engine(graph) as engine:
        return _median_seconds(lambda: engine.run(a), repeat)


def pool_echo(a: np.ndarray, repeat: int) -> float:
    with mp.get_context("spawn").Pool(1) as pool:
        return _median_seconds(lambda: pool.apply(echo, (a,)), repeat)


def executor_echo(a: np.ndarray, repeat: int) -> float:
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return _median_seconds(lambda: ex.submit(echo, a).result(), repeat)


def ray_echo(a: np.ndarray, repeat: int) -> dict[str, float]:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(_Echo).remote()
        task = ray.remote(echo)
        return {
            "ray actor": _median_seconds(lambda: ray.get(actor.call.remote(a)), repeat),
            "ray task": _median_seconds(lambda: ray.get(task.remote(a)), repeat),
        }
    finally:
        ray.shutdown()


class _Echo:
    def call(self, a: Any) -> Any:
        return a


FIGURE = Figure("a large float32 array to a worker and back: MB/s (higher is better)", ("system",), ("MB/s",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    a = np.random.default_rng(0).standard_normal(args.mib * 2**18, dtype=np.float32)
    copy = _median_seconds(lambda: a.copy(), args.repeat)
    timings = {
        "parapipe": parapipe_echo(a, args.repeat),
        "parapipe, 3 stages in a Pipeline": parapipe_pipeline_echo(a, args.repeat),
        "multiprocessing.Pool": pool_echo(a, args.repeat),
        "ProcessPoolExecutor": executor_echo(a, args.repeat),
    }
    try:
        timings.update(ray_echo(a, args.repeat))
    except ImportError:
        print("(ray not installed: pip install ray to add its rows)")
    mb = a.nbytes / 1e6
    rows = [(name, round(t * 1e3, 1), round(mb / t), round(timings["parapipe"] and t / timings["parapipe"], 2))
            for name, t in timings.items()]  # fmt: skip
    headers = ["system", "round trip ms", "MB/s", "time vs parapipe"]
    report(
        FIGURE,
        headers,
        rows,
        args.plot,
        title=f"payload: {args.mib} MiB float32 echo, median of {args.repeat}",
        notes=[machine_line(), f"one memcpy of the array here: {copy * 1e3:.1f} ms"],
    )


if __name__ == "__main__":
    main()
