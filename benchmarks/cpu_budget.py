"""Three CPU-heavy "models" on the same items: sequential, dedicated processes, parapipe.

The models stand in for whisper, a speaker embedder and a gender classifier: stacks of layers,
each a matrix product (multithreaded by the BLAS numpy ships with) followed by single-threaded
numpy element-wise work (activation, residual, normalisation). Widths and depths differ so the
costs differ like the real ones do: whisper about 60% of the work, speaker 27%, gender 13%.

Variants, all over the same items and checked to give the same results:
  (a) sequential: one process runs the three models one after another, library-default threads.
  (b) dedicated:  one multiprocessing.Process per model, library-default threads; each gets every
                  item at once and the parent joins the results (the blog's failed attempt).
  (c) parapipe:   Parallel(whisper, speaker, gender) with cpus=1 per stage.
  (d) auto:       the same graph with Engine(cpus="auto", warmup=...), which may add replicas.

Start-up (loading the models, and for (d) the warm-up and re-plan) is measured apart and kept
out of the timed part for every variant. See docs/benchmarks/cpu_budget.md for how to read it.

Usage: python benchmarks/cpu_budget.py [--items 40] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import CpuMeter, Figure, blas_info, machine_line, parse_args, plot_table, print_table

import parapipe as pp

# name: (width, layers, rows). One layer costs about rows * width**2 multiply-adds plus the
# element-wise passes over rows * width values; rows are small, as in per-frame inference.
MODELS: dict[str, tuple[int, int, int]] = {
    "whisper": (512, 16, 128),
    "speaker": (384, 14, 96),
    "gender": (256, 15, 64),
}

ROUND_BUDGET_S = 60.0


class Model(pp.Stage):
    """A stack of dense layers; ``setup()`` is the "model load", ``process()`` one inference."""

    cpus = 1

    def __init__(self, name: str, width: int, layers: int, rows: int) -> None:
        self.name = name
        self.width, self.layers, self.rows = width, layers, rows

    def setup(self) -> None:
        import numpy as np

        rng = np.random.default_rng(len(self.name))
        scale = 1 / math.sqrt(self.width)
        shape = (self.width, self.width)
        self.weights = [(rng.standard_normal(shape) * scale).astype(np.float32) for _ in range(self.layers)]

    def process(self, item: int) -> float:
        import numpy as np

        x = np.random.default_rng(item).standard_normal((self.rows, self.width)).astype(np.float32)
        for w in self.weights:
            x = x + np.tanh(x @ w)
            x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-5)
        return float(np.abs(x).mean())


def make_models() -> list[Model]:
    return [Model(name, *shape) for name, shape in MODELS.items()]


@dataclass
class Outcome:
    """One row of the table, plus the results to compare across variants."""

    variant: str
    workers: str
    startup: float
    meter: CpuMeter
    results: list[dict[str, float]] = field(repr=False)


# --------------------------------------------------------------------------- (a) sequential


def run_sequential(items: list[int]) -> Outcome:
    t0 = time.perf_counter()
    models = make_models()
    for m in models:
        m.setup()
    startup = time.perf_counter() - t0
    with CpuMeter() as meter:
        results = [{m.name: m.process(i) for m in models} for i in items]
    return Outcome("(a) sequential, one process", "1 proc x default threads", startup, meter, results)


# --------------------------------------------------------------------------- (b) dedicated


def _dedicated_main(model: Model, inbox: Any, outbox: Any) -> None:
    """One process per model: load, say ready, run every item sent, reply, wait to be let go."""
    model.setup()
    outbox.put(("ready", model.name))
    items = inbox.get()
    outbox.put(("done", model.name, [model.process(i) for i in items]))
    inbox.get()  # stay alive until the parent has read our CPU time


def run_dedicated(items: list[int]) -> Outcome:
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    t0 = time.perf_counter()
    procs = []
    for m in make_models():
        inbox = ctx.Queue()
        p = ctx.Process(target=_dedicated_main, args=(m, inbox, outbox), name=m.name)
        p.start()
        procs.append((p, inbox))
    try:
        for _ in procs:
            outbox.get(timeout=300)
        startup = time.perf_counter() - t0
        with CpuMeter(p.pid for p, _ in procs) as meter:
            for _, inbox in procs:
                inbox.put(items)
            per_model = {msg[1]: msg[2] for msg in (outbox.get(timeout=600) for _ in procs)}
    finally:
        for _, inbox in procs:
            inbox.put(None)
        for p, _ in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
    results = [{name: per_model[name][k] for name in MODELS} for k in range(len(items))]
    return Outcome("(b) dedicated processes, no caps", "3 procs x default threads", startup, meter, results)


# --------------------------------------------------------------------------- (c), (d) parapipe


def run_parapipe(items: list[int], *, auto: bool, warmup: list[int]) -> Outcome:
    graph = pp.Parallel(**{m.name: m for m in make_models()})
    options: dict[str, Any] = {"cpus": "auto", "warmup": warmup} if auto else {}
    t0 = time.perf_counter()
    with pp.Engine(graph, **options) as engine:
        startup = time.perf_counter() - t0
        workers = engine.workers()
        with CpuMeter(w["pid"] for w in workers) as meter:
            results = list(engine.map(items))
    if auto:
        return Outcome('(d) parapipe, cpus="auto"', _shape(workers), startup, meter, results)
    return Outcome("(c) parapipe, cpus=1 per stage", _shape(workers), startup, meter, results)


def _shape(workers: list[dict[str, Any]]) -> str:
    """``whisper 2x1t, speaker 1x1t``: replicas and threads per stage."""
    by_stage: dict[str, list[int]] = {}
    for w in workers:
        by_stage.setdefault(w["stage"], []).append(w["threads"])
    return ", ".join(f"{s} {len(t)}x{max(t)}t" for s, t in by_stage.items())


# --------------------------------------------------------------------------- report


def check_same(outcomes: list[Outcome]) -> None:
    """Every variant must compute the same thing; float32 sums may differ in the last digits."""
    reference = outcomes[0].results
    for o in outcomes[1:]:
        for ref, got in zip(reference, o.results, strict=True):
            for name in MODELS:
                if not math.isclose(ref[name], got[name], rel_tol=1e-3):
                    raise SystemExit(f"{o.variant}: {name} gave {got[name]}, sequential gave {ref[name]}")


def _median_round(runs: list[Outcome]) -> Outcome:
    """The round with the median wall time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda o: o.meter.wall)[(len(runs) - 1) // 2]


def report(outcomes: list[Outcome], items: int, repeat: int, plot: Path | None = None) -> None:
    base = outcomes[0].meter.wall
    headers = ["variant", "workers", "wall s", "speedup vs (a)", "CPU util", "other load", "start-up s"]
    rows = [
        [
            o.variant,
            o.workers,
            f"{o.meter.wall:.2f}",
            f"{base / o.meter.wall:.2f}x",
            f"{o.meter.utilisation:.0%}",
            f"{o.meter.foreign:.0%}",
            f"{o.startup:.2f}",
        ]
        for o in outcomes
    ]
    shapes = ", ".join(f"{n} {w}x{w}x{layers} on {r} rows" for n, (w, layers, r) in MODELS.items())
    print_table(
        headers,
        rows,
        title=f"CPU budgets: three models, {items} items, median of {repeat} interleaved rounds",
        notes=[machine_line(), blas_info(), f"models (width x width x layers on rows): {shapes}"],
    )
    if plot:
        plot_table(FIGURE, headers, rows, plot)


FIGURE = Figure("three CPU-heavy models: wall seconds (lower is better)", ("variant",), ("wall s",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items per variant and round (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all four variants (default 3)")
    parser.add_argument("--quick", action="store_true", help="12 items, one round: a smoke run, not a measurement")
    args = parse_args(parser, FIGURE, argv)
    if args is None:
        return 0
    n, repeat = (12, 1) if args.quick else (args.items, args.repeat)
    items = list(range(n))
    warmup = list(range(1000, 1004))
    variants = {
        "a": lambda: run_sequential(items),
        "b": lambda: run_dedicated(items),
        "c": lambda: run_parapipe(items, auto=False, warmup=warmup),
        "d": lambda: run_parapipe(items, auto=True, warmup=warmup),
    }
    runs: dict[str, list[Outcome]] = {k: [] for k in variants}
    started = time.perf_counter()
    rounds = 0
    # Rounds interleave the variants, so a burst of load elsewhere hits them alike; no new round
    # starts after ROUND_BUDGET_S, which keeps a run on a busy machine near two minutes.
    while rounds < repeat and (rounds == 0 or time.perf_counter() - started < ROUND_BUDGET_S):
        rounds += 1
        for label, run in variants.items():
            print(f"round {rounds}/{repeat}: ({label}) ...", file=sys.stderr, flush=True)
            runs[label].append(run())
            check_same([runs["a"][0], runs[label][-1]])
    report([_median_round(v) for v in runs.values()], n, rounds, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
