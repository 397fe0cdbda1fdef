"""parapipe local vs parapipe on Ray vs the same no-op work written by hand as Ray actors; and
the speech graph, local vs on a 2-node Ray cluster on this machine.

One run, one table: items/s of a map, round trip p50/p99 of one item at a time, cold start
(engine start, or actor creation and its first answer). The Ray instance is started once,
before any row, and its start is reported apart: every Ray row would pay it.

The speech rows run `parapipe.audio.analysis_graph(voices=...)` (planned for this machine's
cores, as `benchmarks/speech.py` does) over the espeak-ng corpus of scripts/make_corpus.py:
once with the local backend, once on a `ray.cluster_utils.Cluster` whose head has no CPUs and
whose two worker nodes share this machine (each declares half the CPUs the plan asks for: Ray
counts CPUs logically, and the local backend, too, runs the plan's replicas on these cores).
Same graph, same files; models are loaded and warm before the timed map (cold start, engine
start until every replica is ready, is its own column).

    python benchmarks/ray_backend.py [--items 3000] [--calls 300] [--speech-files 27] [--no-speech]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Figure, add_plot_options, machine_line, plot_page, plot_table, print_table

import parapipe as pp

Row = tuple[float, float, float, float, float]
"""items/s, round trip p50 ms, p99 ms, cold start s, wall s of the map."""


def noop(x: Any) -> Any:
    return x


class HandActor:
    """What a Ray user writes: one actor, one method per item."""

    def process(self, x: Any) -> Any:
        return x


def _quantiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def bench_parapipe(backend: str, items: int, calls: int) -> Row:
    t0 = time.perf_counter()
    with pp.Engine(pp.stage(noop), backend=backend) as engine:
        cold = time.perf_counter() - t0
        engine.run(0)
        t1 = time.perf_counter()
        n = sum(1 for _ in engine.map(range(items)))
        wall = time.perf_counter() - t1
        trips = []
        for i in range(calls):
            t = time.perf_counter()
            engine.run(i)
            trips.append(time.perf_counter() - t)
    return (n / wall, *_quantiles(trips), cold, wall)


def bench_hand_ray(items: int, calls: int) -> Row:
    import ray

    t0 = time.perf_counter()
    actor = ray.remote(num_cpus=1)(HandActor).remote()
    ray.get(actor.process.remote(0))
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = len(ray.get([actor.process.remote(i) for i in range(items)]))
    wall = time.perf_counter() - t1
    trips = []
    for i in range(calls):
        t = time.perf_counter()
        ray.get(actor.process.remote(i))
        trips.append(time.perf_counter() - t)
    ray.kill(actor)
    return (n / wall, *_quantiles(trips), cold, wall)


def bench_speech(backend: str, files: list[str], warm: list[str], calls: int, voices: str) -> Row:
    """The speech graph (on Ray: the cluster this process initialised): cold start, then a
    warm-up map that is not timed, then one map over every file, then files one at a time."""
    from parapipe.audio import analysis_graph

    t0 = time.perf_counter()
    with pp.Engine(analysis_graph(voices=voices), backend=backend) as engine:
        cold = time.perf_counter() - t0
        for _ in engine.map(warm, ordered=False):  # every model loaded and run once per replica
            pass
        t1 = time.perf_counter()
        n = sum(1 for _ in engine.map(files, ordered=False))
        wall = time.perf_counter() - t1
        trips = []
        for path in files[:calls]:
            t = time.perf_counter()
            engine.run(path)
            trips.append(time.perf_counter() - t)
    return (n / wall, *_quantiles(trips), cold, wall)


def speech_rows(n_files: int, calls: int) -> tuple[dict[str, Row], list[str]]:
    """The speech graph local, then on a 2-node cluster of this machine; and notes on both."""
    import ray
    from ray.cluster_utils import Cluster
    from speech import build_corpus, enroll, pick_files

    from parapipe.audio import analysis_graph
    from parapipe.graph import stages

    need = sum(int(s.cpus) * s.replicas for s in stages(analysis_graph()))
    per_node = math.ceil(need / 2)
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory(prefix="parapipe-ray-speech-") as tmp:
        root = Path(tmp) / "corpus"
        files, _ = pick_files(root, build_corpus(root), n_files)
        enroll(root, Path(tmp) / "voices.db")
        warm = files[: max(3, need)]
        for name in ("local", "ray"):  # each learns its own unknown-N voices, from the same registry
            shutil.copy(Path(tmp) / "voices.db", Path(tmp) / f"voices-{name}.db")
        rows["parapipe local"] = bench_speech("local", files, warm, calls, str(Path(tmp) / "voices-local.db"))
        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        started = time.perf_counter() - t0
        try:
            rows["parapipe on Ray, 2 nodes"] = bench_speech("ray", files, warm, calls, str(Path(tmp) / "voices-ray.db"))
        finally:
            ray.shutdown()
            cluster.shutdown()
    notes = [
        f"speech: {len(files)} files per map (after {len(warm)} warm-up files), {calls} sequential files; "
        f"analysis_graph planned for {need} single-thread replicas",
        f"speech cluster: a head with 0 CPUs + 2 worker nodes with {per_node} logical CPUs each, "
        f"all on this machine; started in {started:.2f} s (not in any row)",
    ]
    return rows, notes


FIGURE = Figure("parapipe local and on Ray vs hand-written Ray actors: a no-op graph and the speech graph",
                ("graph", "run"), ("items/s (map)", "round trip p50 ms"), log=True)  # fmt: skip
HEADERS = ["graph", "run", "items/s (map)", "wall s (map)", "round trip p50 ms", "p99 ms", "cold start s",
           "x local items/s", "x hand items/s", "x hand p50"]  # fmt: skip


def table_rows(graph: str, rows: dict[str, Row]) -> list[tuple[Any, ...]]:
    """One graph's rows, with ratios to its local row and (where there is one) to the hand-written actor."""
    local = rows["parapipe local"]
    hand = rows.get("hand-written Ray actor")
    return [
        (graph, name, _num(rate), round(wall, 2), round(p50, 3), round(p99, 3), round(cold, 2),
         _ratio(rate / local[0]), "-" if hand is None else _ratio(rate / hand[0]),
         "-" if hand is None else _ratio(p50 / hand[1]))
        for name, (rate, p50, p99, cold, wall) in rows.items()
    ]  # fmt: skip


def _ratio(x: float) -> float:
    return round(x, 2) if x >= 0.1 else round(x, 4)


def _num(rate: float) -> float:
    return round(rate) if rate >= 100 else round(rate, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--speech-files",
        type=int,
        default=27,
        metavar="N",
        help="files per speech map (default 27: the corpus's speech files; more are cycled copies)",
    )
    parser.add_argument("--speech-calls", type=int, default=5, metavar="K", help="files timed one at a time")
    parser.add_argument("--no-speech", action="store_true", help="only the no-op rows (no models, no cluster)")
    add_plot_options(parser)
    args = parser.parse_args()
    if args.plot_from:
        plot_page(FIGURE, args.plot_from, args.plot)
        return
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    noop_rows = {
        "parapipe local": bench_parapipe("local", args.items, args.calls),
        "parapipe on Ray": bench_parapipe("ray", args.items, args.calls),
        "hand-written Ray actor": bench_hand_ray(args.items, args.calls),
    }
    ray.shutdown()
    table = table_rows("no-op", noop_rows)
    notes = [
        machine_line(),
        f"ray.init (local, once, not in any row): {ray_start:.2f} s",
        f"no-op: {args.items} items per map, {args.calls} sequential round trips; one replica / one actor",
    ]
    if not args.no_speech:
        rows, speech_notes = speech_rows(args.speech_files, args.speech_calls)
        table += table_rows("speech", rows)
        notes += speech_notes
    if args.plot:
        plot_table(FIGURE, HEADERS, table, args.plot)
    print_table(HEADERS, table, title="parapipe on Ray vs local and hand-written Ray actors", notes=notes)


if __name__ == "__main__":
    main()
