"""parapipe local vs parapipe on Ray vs the same work written by hand as Ray actors, for a no-op
graph and for the speech graph (on a 2-node Ray cluster on this machine).

One run, one table: items/s of a map, round trip p50/p99 of one item at a time, cold start
(engine start, or actor creation and its first answer). The Ray instance is started once,
before any row, and its start is reported apart: every Ray row would pay it.

The speech rows run `parapipe.audio.analysis_graph(voices=...)` (planned for this machine's
cores, as `benchmarks/speech.py` does) over the espeak-ng corpus of scripts/make_corpus.py:
once with the local backend, once on a `ray.cluster_utils.Cluster` whose head has no CPUs and
whose two worker nodes share this machine (each declares half the CPUs the plan asks for: Ray
counts CPUs logically, and the local backend, too, runs the plan's replicas on these cores).
Same graph, same files; models are loaded and warm before the timed map (cold start, engine
start until every replica is ready, is its own column). On the same cluster, right after the
parapipe row, the speech analysis written by hand as Ray actors (`HandSpeech`: parapipe's plan
of replicas and CPUs, the real stage classes, ObjectRefs from actor to actor, ray.wait over a
bounded window, merge_result in the driver) is measured the same way.

    python benchmarks/ray_backend.py [--items 3000] [--calls 300] [--speech-files 27] [--no-speech]
"""

from __future__ import annotations

import argparse
import contextlib
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

from _common import Figure, machine_line, parse_args, report

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


THREAD_CAPS = {"runtime_env": {"env_vars": dict.fromkeys(
    ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"), "1")}}  # fmt: skip
"""What a careful Ray user gives every single-core actor, before its libraries load."""


class SpeechActor:
    """What a Ray user writes for one replica of one speech stage: the real stage object, built
    and set up once, then one call per file.

    Outside a parapipe worker the stage classes size their thread pools from the process's CPU
    affinity, so setup() runs narrowed to one core (as benchmarks/speech.py's (a1) row does); then
    every thread may run on any core again, as a Ray actor that pins nothing."""

    def __init__(self, name: str, voices: str) -> None:
        from parapipe.audio import Decode, GenderAge, Segment, Speaker, Transcribe

        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
        make = {"decode": Decode, "vad": Segment, "transcribe": Transcribe, "gender_age": GenderAge,
                "speaker": lambda: Speaker(voices)}  # fmt: skip
        self.stage = make[name]()
        self.stage.setup()
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cores)

    def ready(self) -> int:
        return os.getpid()

    def process(self, x: Any) -> Any:
        return self.stage.process(x)


class HandSpeech:
    """The speech analysis as Ray actors without parapipe: decode -> vad -> the three branches in
    parallel, ObjectRefs passed from actor to actor, each stage's replicas taken in turn, results
    merged in the driver with `merge_result` (what analysis_graph merges with)."""

    BRANCHES = ("transcribe", "speaker", "gender_age")

    def __init__(self, plan: dict[str, tuple[int, int]], voices: str) -> None:
        import ray

        actor = ray.remote(SpeechActor)
        self.actors = {name: [actor.options(num_cpus=cpus, **THREAD_CAPS).remote(name, voices)  # type: ignore[arg-type]
                              for _ in range(replicas)] for name, (replicas, cpus) in plan.items()}  # fmt: skip
        self.turn = dict.fromkeys(plan, 0)
        ray.get([a.ready.remote() for group in self.actors.values() for a in group])

    def _next(self, name: str) -> Any:
        self.turn[name] += 1
        group = self.actors[name]
        return group[self.turn[name] % len(group)]

    def submit(self, path: str) -> dict[str, Any]:
        clip = self._next("vad").process.remote(self._next("decode").process.remote(path))
        return {b: self._next(b).process.remote(clip) for b in self.BRANCHES}

    def one(self, path: str) -> dict[str, Any]:
        import ray

        from parapipe.audio import merge_result

        refs = self.submit(path)
        return merge_result(dict(zip(refs, ray.get(list(refs.values())), strict=True)))

    def map(self, files: list[str], window: int) -> list[dict[str, Any]]:
        """At most ``window`` files in flight; a file is merged as soon as its three branches are done."""
        import ray

        from parapipe.audio import merge_result

        todo = iter(files)
        inflight: list[dict[str, Any]] = []  # per file: branch name -> ObjectRef of its answer
        done: set[Any] = set()
        out: list[dict[str, Any]] = []
        while True:
            while len(inflight) < window and (path := next(todo, None)) is not None:
                inflight.append(self.submit(path))
            if not inflight:
                return out
            ready, _ = ray.wait([r for refs in inflight for r in refs.values() if r not in done], fetch_local=False)
            done.update(ready)
            for refs in [refs for refs in inflight if done.issuperset(refs.values())]:
                inflight.remove(refs)
                done.difference_update(refs.values())
                out.append(merge_result(dict(zip(refs, ray.get(list(refs.values())), strict=True))))

    def close(self) -> None:
        import ray

        for group in self.actors.values():
            for a in group:
                ray.kill(a)


def bench_hand_speech(plan: dict[str, tuple[int, int]], files: list[str], warm: list[str], calls: int,
                      voices: str) -> Row:  # fmt: skip
    """The speech analysis by hand on the cluster this process joined, measured as `bench_speech`."""
    window = 2 * sum(replicas for replicas, _ in plan.values())  # every actor busy, one file queued behind
    t0 = time.perf_counter()
    hand = HandSpeech(plan, voices)
    try:
        cold = time.perf_counter() - t0
        hand.map(warm, window)
        t1 = time.perf_counter()
        results = hand.map(files, window)
        wall = time.perf_counter() - t1
        trips = []
        for path in files[:calls]:
            t = time.perf_counter()
            results.append(hand.one(path))
            trips.append(time.perf_counter() - t)
    finally:
        hand.close()
    answered = sorted(r["file"] for r in results)
    if answered != sorted(files + files[:calls]) or not all(r["text"] for r in results):
        raise SystemExit(f"hand-written Ray speech: {len(results)} results for {len(files) + calls} files, "
                         f"{sum(not r['text'] for r in results)} with no text: the hand row is wrong")  # fmt: skip
    return (len(files) / wall, *_quantiles(trips), cold, wall)


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

    plan = {s.stage_name: (s.replicas, int(s.cpus)) for s in stages(analysis_graph())}
    need = sum(cpus * replicas for replicas, cpus in plan.values())
    per_node = math.ceil(need / 2)
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory(prefix="parapipe-ray-speech-") as tmp:
        root = Path(tmp) / "corpus"
        files, _ = pick_files(root, build_corpus(root), n_files)
        enroll(root, Path(tmp) / "voices.db")
        warm = files[: max(3, need)]
        for name in ("local", "ray", "hand"):  # each learns its own unknown-N voices, from the same registry
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
            hand_voices = str(Path(tmp) / "voices-hand.db")
            rows["hand-written Ray actors"] = bench_hand_speech(plan, files, warm, calls, hand_voices)
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
    hand = next((row for name, row in rows.items() if name.startswith("hand-written")), None)
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
    args = parse_args(parser, FIGURE)
    if args is None:
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
    report(FIGURE, HEADERS, table, args.plot, title="parapipe on Ray vs local and hand-written Ray actors", notes=notes)


if __name__ == "__main__":
    main()
