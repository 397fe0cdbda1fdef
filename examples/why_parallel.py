"""Why "run the three models in parallel" was not faster, and what is.

Three CPU-heavy "models" (stand-ins for whisper, a speaker embedder and a gender classifier:
stacks of numpy matrix products plus element-wise work) get the same items, the way an audio
chunk goes to all three. Each approach from the blog posts is tried in turn:

  sequential          one process, one model after another (the baseline)
  asyncio.gather      the three calls as coroutines
  threads             the three calls in a ThreadPoolExecutor
  ProcessPoolExecutor the three calls submitted to a pool of 3 processes; models load lazily
                      into a per-process global, as in the blog
  dedicated processes one multiprocessing.Process per model, fed by queues, no thread caps;
                      then the same with each process capped to one BLAS thread by hand
  parapipe            one stage per model with a CPU budget; then cpus="auto", which also
                      measures the models and gives the heavy one more replicas

Run: python examples/why_parallel.py [--items 32] [--repeat 3]
Explained in docs/why-parallel-was-not-faster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import psutil

import parapipe as pp

# name: (width, layers, rows). whisper is about 60% of the work, speaker 27%, gender 13%.
MODELS = {"whisper": (512, 16, 128), "speaker": (384, 14, 96), "gender": (256, 15, 64)}


class Model(pp.Stage):
    """One "model": ``setup()`` loads it (makes the weights), ``process()`` runs one item."""

    cpus = 1

    def __init__(self, name: str) -> None:
        self.name = name
        self.width, self.layers, self.rows = MODELS[name]

    def setup(self) -> None:
        import numpy as np

        rng = np.random.default_rng(len(self.name))
        shape, scale = (self.width, self.width), 1 / math.sqrt(self.width)
        self.weights = [(rng.standard_normal(shape) * scale).astype(np.float32) for _ in range(self.layers)]

    def process(self, item: int) -> float:
        import numpy as np

        x = np.random.default_rng(item).standard_normal((self.rows, self.width)).astype(np.float32)
        for w in self.weights:  # matrix product (BLAS threads), then single-threaded numpy
            x = x + np.tanh(x @ w)
            x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-5)
        return float(np.abs(x).mean())


def loaded_models() -> list[Model]:
    models = [Model(name) for name in MODELS]
    for m in models:
        m.setup()
    return models


# --------------------------------------------------------------------------- the attempts


def sequential(items: list[int]) -> dict[str, Any]:
    models = loaded_models()
    with Meter() as meter:
        results = [{m.name: m.process(i) for m in models} for i in items]
    return meter.row(results, loads=3, shape="1 proc x default threads")


def with_asyncio(items: list[int]) -> dict[str, Any]:
    models = loaded_models()

    async def infer(model: Model, item: int) -> float:
        return model.process(item)  # CPU work never awaits: the event loop runs one call at a time

    async def one(item: int) -> dict[str, float]:
        outs = await asyncio.gather(*(infer(m, item) for m in models))
        return dict(zip(MODELS, outs, strict=True))

    async def run_all() -> list[dict[str, float]]:
        return [await one(i) for i in items]

    with Meter() as meter:
        results = asyncio.run(run_all())
    return meter.row(results, loads=3, shape="1 proc x default threads")


def with_threads(items: list[int]) -> dict[str, Any]:
    models = loaded_models()
    with ThreadPoolExecutor(max_workers=3) as pool, Meter() as meter:
        results = [dict(zip(MODELS, pool.map(lambda m, i=i: m.process(i), models), strict=True)) for i in items]
    return meter.row(results, loads=3, shape="1 proc, 3 threads x default threads")


_lazy_models: dict[str, Model] = {}  # per-process global, filled on first use, as in the blog


def _lazy_infer(name: str, item: int) -> tuple[float, int]:
    loads = 0
    if name not in _lazy_models:
        model = Model(name)
        model.setup()
        _lazy_models[name] = model
        loads = 1
    return _lazy_models[name].process(item), loads


def with_process_pool(items: list[int]) -> dict[str, Any]:
    loads = 0
    pool = ProcessPoolExecutor(max_workers=3, mp_context=mp.get_context("spawn"))
    with pool, Meter() as meter:  # the lazy loads are part of the run: that is how the pool works
        results = []
        for i in items:
            futures = {name: pool.submit(_lazy_infer, name, i) for name in MODELS}
            outs = {name: f.result() for name, f in futures.items()}
            loads += sum(n for _, n in outs.values())
            results.append({name: value for name, (value, _) in outs.items()})
    return meter.row(results, loads=loads, shape="3 procs x default threads")


def _dedicated_worker(name: str, tasks: Any, answers: Any, one_thread: bool) -> None:
    model = Model(name)
    model.setup()
    if one_thread:  # the hand-made fix: cap this process's BLAS pool to one thread
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    answers.put(("ready", name))
    while (item := tasks.get()) is not None:
        answers.put((name, model.process(item)))


def with_dedicated_processes(items: list[int], one_thread: bool = False) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queues = {name: (ctx.Queue(), ctx.Queue()) for name in MODELS}
    procs = [ctx.Process(target=_dedicated_worker, args=(name, *qs, one_thread)) for name, qs in queues.items()]
    for p in procs:
        p.start()
    for _, answers in queues.values():
        answers.get()  # wait until every model is loaded
    with Meter() as meter:
        results = []
        for i in items:  # send the item to every model, then collect the three answers
            for tasks, _ in queues.values():
                tasks.put(i)
            results.append({name: answers.get()[1] for name, (_, answers) in queues.items()})
    for tasks, _ in queues.values():
        tasks.put(None)
    for p in procs:
        p.join()
    return meter.row(results, loads=3, shape="3 procs x " + ("1 thread" if one_thread else "default threads"))


def with_parapipe(items: list[int], **engine_options: Any) -> dict[str, Any]:
    graph = pp.Parallel(**{name: Model(name) for name in MODELS})
    with pp.Engine(graph, **engine_options) as engine:
        workers = engine.workers()
        with Meter() as meter:
            results = list(engine.map(items))
    threads = {w["stage"]: w["threads"] for w in workers}
    shape = ", ".join(f"{n} {sum(w['stage'] == n for w in workers)}x{threads[n]}t" for n in MODELS)
    return meter.row(results, loads=len(workers), shape=shape)


# --------------------------------------------------------------------------- measuring


def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


class Meter:
    """Wall time and CPU seconds of this process and its children (alive at the end) in a block."""

    def __enter__(self) -> Meter:
        me = psutil.Process()
        self._before = {p.pid: _cpu(p) for p in [me, *me.children(recursive=True)]}
        self._busy0 = psutil.cpu_times()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._t0
        me = psutil.Process()
        self.cpu = sum(_cpu(p) - self._before.get(p.pid, 0.0) for p in [me, *me.children(recursive=True)])
        busy1 = psutil.cpu_times()
        idle = (busy1.idle - self._busy0.idle) + (busy1.iowait - self._busy0.iowait)
        cores = psutil.cpu_count()
        self.others = max(0.0, self.wall * cores - idle - self.cpu) / (self.wall * cores)

    def row(self, results: list[dict[str, float]], *, loads: int, shape: str) -> dict[str, Any]:
        cores = len(os.sched_getaffinity(0))
        return {
            "wall": self.wall,
            "util": self.cpu / (self.wall * cores),
            "others": self.others,
            "loads": loads,
            "shape": shape,
            "results": results,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="three CPU-heavy models, eight ways")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each row shows its median round")
    args = parser.parse_args()
    items = list(range(args.items))
    attempts = {
        "sequential": sequential,
        "asyncio.gather": with_asyncio,
        "threads (ThreadPoolExecutor)": with_threads,
        "ProcessPoolExecutor(3)": with_process_pool,
        "3 dedicated processes, no caps": with_dedicated_processes,
        "3 dedicated processes, 1 thread each": lambda xs: with_dedicated_processes(xs, one_thread=True),
        "parapipe, cpus=1 per stage": with_parapipe,
        'parapipe, cpus="auto"': lambda xs: with_parapipe(xs, cpus="auto", warmup=[1000, 1001, 1002]),
    }
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in attempts}
    for r in range(args.repeat):  # rounds interleave the attempts, so load elsewhere hits all alike
        for label, attempt in attempts.items():
            runs[label].append(attempt(items))
            print(f"  round {r + 1}: {label}: {runs[label][-1]['wall']:.2f} s", flush=True)
    rows = {label: sorted(rs, key=lambda row: row["wall"])[(len(rs) - 1) // 2] for label, rs in runs.items()}
    base = rows["sequential"]
    for label, row in rows.items():
        for ref, got in zip(base["results"], row["results"], strict=True):
            assert all(math.isclose(ref[k], got[k], rel_tol=1e-3) for k in MODELS), f"{label} differs"

    cores = len(os.sched_getaffinity(0))
    print(f"\n{args.items} items, {cores} cores seen (os.sched_getaffinity), median of {args.repeat} rounds\n")
    print("| approach | wall s | speedup | CPU util | other load | model copies | processes x threads |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['wall']:.2f} | {base['wall'] / r['wall']:.2f}x | {r['util']:.0%} "
            f"| {r['others']:.0%} | {r['loads']} | {r['shape']} |"
        )


if __name__ == "__main__":
    main()
