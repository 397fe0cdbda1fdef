"""Dynamic batching on a real vectorised model (a small numpy MLP): on vs off, at several loads.

The model's cost per call is ``a + b*n`` for a batch of ``n`` rows, so batching pays when
requests arrive faster than one-at-a-time calls can serve them. An open-loop client sends
requests at a fixed rate for ``--seconds`` (or all at once for "max") and we report achieved
throughput and latency p50/p99 from submit to result. With Ray installed (``parapipe[bench]``)
the same model also runs behind Ray Serve's ``@serve.batch`` with the same batch size and wait.

Usage: python benchmarks/batching.py [--seconds 3] [--batch-size 32] [--batch-wait 0.005]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

import parapipe as pp

sys.path.insert(0, str(Path(__file__).parent))
from _common import Figure, cores_seen, machine_line, parse_args, report

WIDTH, DEPTH = 64, 48


class MLP(pp.Stage):
    """A deep, narrow MLP (48 layers of 64x64, float32); one request is one 64-float row.

    Deep and narrow on purpose: most of its cost is per call (one numpy call per layer), little
    per row, like many real models whose kernels are launched per batch. That is the shape of
    model batching is for; the table prints the measured a and b.
    """

    cpus = 1

    def setup(self) -> None:
        rng = np.random.default_rng(0)
        self.layers = [rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * 0.2 for _ in range(DEPTH)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for w in self.layers[:-1]:
            x = np.maximum(x @ w, 0.0)
        return x @ self.layers[-1]

    def process(self, item: np.ndarray) -> int:
        return int(self.forward(item[None, :]).argmax())


class BatchedMLP(MLP):
    def process_batch(self, items: list[np.ndarray]) -> list[int]:
        return self.forward(np.stack(items)).argmax(axis=1).tolist()


def cost_model() -> tuple[float, float]:
    """Fit a + b*n to the model's time for n = 1 and n = 32 in this process, single-threaded."""
    from threadpoolctl import threadpool_limits

    model = MLP()
    model.setup()
    with threadpool_limits(1):
        t = {}
        for n in (1, 32):
            x = np.ones((n, WIDTH), np.float32)
            t0 = time.perf_counter()
            for _ in range(200):
                model.forward(x)
            t[n] = (time.perf_counter() - t0) / 200
    b = (t[32] - t[1]) / 31
    return t[1] - b, b


def drive(submit: Callable[[np.ndarray], Future[Any]], rate: float | None, seconds: float) -> dict[str, float]:
    """Open-loop load: ``submit`` at ``rate`` per second (None: 4,000 at once)."""
    x = np.ones(WIDTH, np.float32)
    latencies: list[float] = []
    lock = threading.Lock()
    count = int(rate * seconds) if rate else 4000
    pace = threading.Event()
    futures = []
    start = time.perf_counter()
    for i in range(count):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                pace.wait(delay)  # pacing the client, not synchronising
        sent = time.perf_counter()
        fut = submit(x)
        fut.add_done_callback(lambda f, s=sent: _record(latencies, lock, s))
        futures.append(fut)
    for f in futures:
        f.result()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"rps": count / wall, "p50": lat[len(lat) // 2] * 1e3, "p99": lat[int(len(lat) * 0.99)] * 1e3}


def ray_serve_batch(rates: list[float | None], seconds: float, batch_size: int, batch_wait: float) -> list[tuple]:
    """The same model as a Ray Serve deployment whose method uses ``@serve.batch``.

    One replica with one CPU, called through a deployment handle (no HTTP proxy), with the
    same batch size and wait. ``max_ongoing_requests`` is raised to 1,000: its default (5 in
    recent Ray) would cap every batch at 5, the trap the issue warns about.
    """
    import asyncio

    import ray
    from ray import serve

    @serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 1})
    class RayBatchedMLP:
        def __init__(self) -> None:
            self.model = MLP()
            self.model.setup()
            self.sizes: list[int] = []

        @serve.batch(max_batch_size=batch_size, batch_wait_timeout_s=batch_wait)
        async def predict(self, items: list[np.ndarray]) -> list[int]:
            self.sizes.append(len(items))
            return self.model.forward(np.stack(items)).argmax(axis=1).tolist()

        def mean_batch(self) -> float:
            return sum(self.sizes) / len(self.sizes)

    ray.init(num_cpus=cores_seen(), include_dashboard=False, log_to_driver=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        serve.start(proxy_location="Disabled")
        handle = serve.run(RayBatchedMLP.bind(), name="mlp", route_prefix=None)

        async def call(x: np.ndarray) -> int:
            return await handle.predict.remote(x)

        def submit(x: np.ndarray) -> Future[Any]:
            return asyncio.run_coroutine_threadsafe(call(x), loop)

        submit(np.ones(WIDTH, np.float32)).result()
        label = "ray serve.batch"
        rows: list[tuple] = []
        for rate in rates:
            r = drive(submit, rate, seconds)
            rows.append((label, rate or "max", round(r["rps"]), round(r["p50"], 2), round(r["p99"], 2), r))
        mean = handle.mean_batch.remote().result()
        rows.append((label, "mean batch size", round(mean, 1), "", "", None))
        return rows
    finally:
        serve.shutdown()
        ray.shutdown()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def _record(latencies: list[float], lock: threading.Lock, sent: float) -> None:
    done = time.perf_counter()
    with lock:
        latencies.append(done - sent)


FIGURE = Figure("dynamic batching on vs off as the offered load grows", ("batching",), ("achieved req/s", "p99 ms"),
                 x="offered req/s", log=True, drop=("mean batch size",))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait", type=float, default=0.005)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    a, b = cost_model()
    rates: list[float | None] = [200, 1000, 3000, None]
    rows = []
    variants = {
        "off (process)": MLP(),
        "on (process_batch)": BatchedMLP().options(batch_size=args.batch_size, batch_wait=args.batch_wait),
    }
    results: dict[tuple[str, Any], dict[str, float]] = {}
    for label, stage in variants.items():
        with pp.Engine(stage) as engine:
            engine.run(np.ones(WIDTH, np.float32))
            for rate in rates:
                r = drive(engine.submit, rate, args.seconds)
                results[(label, rate)] = r
                rows.append((label, rate or "max", round(r["rps"]), round(r["p50"], 2), round(r["p99"], 2)))
            hist = engine.stats()[stage.stage_name].get("batches", {})
        if hist:
            rows.append((label, "mean batch size", round(hist["mean_size"], 1), "", ""))
    try:
        ray_rows = ray_serve_batch(rates, args.seconds, args.batch_size, args.batch_wait)
    except ImportError:
        print('(ray serve not installed: pip install "parapipe[bench]" to add its rows)')
        ray_rows = []
    rows += [row[:5] for row in ray_rows]
    on_max = results[("on (process_batch)", None)]["rps"]
    notes = [
        machine_line(),
        f"model cost per call: a = {a * 1e6:.0f} us + b = {b * 1e6:.1f} us per row (single thread)",
        f"batch_size={args.batch_size}, batch_wait={args.batch_wait * 1e3:.1f} ms; "
        f"throughput gain at max load: {on_max / results[('off (process)', None)]['rps']:.1f}x; "
        f"p99 bound batch_wait + one full batch = {(args.batch_wait + a + b * args.batch_size) * 1e3:.1f} ms",
    ]
    ray_max = next((row[5]["rps"] for row in ray_rows if row[1] == "max"), None)
    if ray_max:
        notes.append(f"parapipe batching vs ray serve.batch at max load: {on_max / ray_max:.1f}x the throughput")
    headers = ["batching", "offered req/s", "achieved req/s", "p50 ms", "p99 ms"]
    report(
        FIGURE,
        headers,
        rows,
        args.plot,
        title=f"batching: {DEPTH}-layer {WIDTH}-wide MLP, one replica, one thread",
        notes=notes,
    )


if __name__ == "__main__":
    main()
