"""An I/O-bound stage: 1,000 calls to a local HTTP server with 50 ms latency, 50 at a time.

parapipe runs them in ONE worker (``concurrency=50``: a thread pool, and an ``async def`` stage
on an event loop); the seed write-up's way is ``multiprocessing.Pool(50)``, a process per call
in flight; the in-process baselines are ``ThreadPoolExecutor(50)`` and asyncio + httpx. Wall
time, and peak memory as RSS summed over the process and its children (psutil, sampled).

Usage: python benchmarks/io_stage.py [--calls 1000] [--latency 0.05] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import parapipe as pp

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from _common import Figure, PeakRss, machine_line, parse_args, plot_table, print_table
from tests.integration._io_server import LatencyServer
from tests.integration._io_stages import afetch


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def _parapipe(stage: pp.Stage) -> Callable[[list[str]], list[Any]]:
    def run(urls: list[str]) -> list[Any]:
        with pp.Engine(stage) as engine:
            return list(engine.map(urls))

    return run


def _pool(n: int) -> Callable[[list[str]], list[Any]]:
    def run(urls: list[str]) -> list[Any]:
        with multiprocessing.get_context("spawn").Pool(n) as pool:
            return pool.map(fetch, urls, chunksize=1)

    return run


def _threads(n: int) -> Callable[[list[str]], list[Any]]:
    def run(urls: list[str]) -> list[Any]:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(fetch, urls))

    return run


def _httpx(n: int) -> Callable[[list[str]], list[Any]]:
    import httpx

    async def main(urls: list[str]) -> list[Any]:
        gate = asyncio.Semaphore(n)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n), timeout=60) as client:

            async def one(url: str) -> str:
                async with gate:
                    return (await client.get(url)).text

            return await asyncio.gather(*(one(u) for u in urls))

    return lambda urls: asyncio.run(main(urls))


FIGURE = Figure("1,000 calls with 50 ms latency, 50 in flight", ("way",), ("wall s", "peak RSS MiB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    n = args.concurrency
    ways = {
        f"parapipe concurrency={n}, threads (1 worker)": _parapipe(pp.stage(fetch, concurrency=n)),
        f"parapipe concurrency={n}, async def (1 worker)": _parapipe(pp.stage(afetch, concurrency=n)),
        f"multiprocessing.Pool({n})": _pool(n),
        f"ThreadPoolExecutor({n})": _threads(n),
        f"asyncio + httpx ({n} at once)": _httpx(n),
    }
    rows = []
    with LatencyServer(args.latency) as server:
        urls = [f"{server.url}/item/{i}" for i in range(args.calls)]
        ideal = args.calls / n * args.latency
        for name, run in ways.items():
            with PeakRss(children=True, period=0.02) as rss:
                t0 = time.perf_counter()
                out = run(urls)
                wall = time.perf_counter() - t0
            assert out == [str(i) for i in range(args.calls)], name
            rows.append((name, f"{wall:.2f}", f"{wall / ideal:.1f}", f"{rss.peak / 2**20:.0f}"))
    headers = ("way", "wall s", "x ideal", "peak RSS MiB")
    notes = [machine_line(), f"ideal wall: {ideal:.2f} s (calls / {n} * latency); wall includes start-up"]
    print_table(headers, rows, title=FIGURE.title, notes=notes)
    if args.plot:
        plot_table(FIGURE, headers, rows, args.plot)


if __name__ == "__main__":
    main()
