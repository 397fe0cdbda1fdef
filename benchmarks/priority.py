"""Side branches at a lower CPU priority: the speech graph with speaker and gender at nice 0, 10, 19.

Three engines run the same throughput plan of `parapipe.audio.analysis_graph` (cpus="auto",
3 warm-up files): every stage at nice 0 (the kernel's fair share), the side branches the plan
finds (speaker and gender) at nice 10, and those two at parapipe's default, `SLACK_NICE` (19).
All three are started first and stay loaded; their passes then alternate, so drifting load on
this shared machine touches each alike. Two workloads:

* batches: the speech corpus (27 files) as 3 `engine.map` calls of 9 files, the way
  `benchmarks/speech.py` times its rounds; each batch ends with one whisper call alone;
* stream: the corpus twice (54 files) in one `engine.map`, where the cores never run dry.

Usage: python benchmarks/priority.py [--passes 5] [--stream-passes 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import CpuMeter, Figure, machine_line, parse_args, report
from speech import build_corpus, enroll, pick_files

import parapipe as pp
from parapipe.audio import analysis_graph
from parapipe.graph import map_stages
from parapipe.priority import SLACK_NICE

VARIANTS = {
    "fair": "every stage at nice 0",
    "10": "speaker, gender_age at nice 10",
    "default": f"speaker, gender_age at nice {SLACK_NICE} (default)",
}
SIDE = ("speaker", "gender_age")

FIGURE = Figure("speech graph on 2 cores: speed when speaker and gender yield the cores",
                ("workload", "side branches"), ("speed vs fair share",))  # fmt: skip


def _graph(variant: str, voices: Path) -> Any:
    graph = analysis_graph(voices=voices, plan=None)
    if variant == "fair":
        return map_stages(graph, lambda s: s.options(nice=0))
    if variant == "10":
        return map_stages(graph, lambda s: s.options(nice=10) if s.stage_name in SIDE else s)
    return graph


def _pass(engine: pp.Engine, batches: list[list[str]]) -> CpuMeter:
    pids = [w["pid"] for w in engine.workers()]
    with CpuMeter(pids) as meter:
        for batch in batches:
            for _ in engine.map(batch, ordered=False):
                pass
    return meter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5, help="passes of the batches workload per variant (0: skip it)")
    parser.add_argument(
        "--stream-passes", type=int, default=5, help="passes of the stream workload per variant (0: skip it)"
    )
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    machine = machine_line()
    tmp = Path(tempfile.mkdtemp(prefix="parapipe-priority-"))
    try:
        labels = build_corpus(tmp / "corpus")
        files, _ = pick_files(tmp / "corpus", labels, None)
        enroll(tmp / "corpus", tmp / "voices.db")
        workloads = {"batches of 9": [files[r::3] for r in range(3)], "stream of 54": [files + files]}
        passes = {"batches of 9": args.passes, "stream of 54": args.stream_passes}
        engines = {}
        for v in VARIANTS:
            db = tmp / f"voices-{v}.db"
            shutil.copy(tmp / "voices.db", db)
            engines[v] = pp.Engine(_graph(v, db), cpus="auto", warmup=files[:3], mode="throughput").start()
        try:
            rows = _measure(engines, workloads, passes)
            plan = engines["default"].plan()
        finally:
            for engine in engines.values():
                engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"## Side branches' CPU priority: {len(files)} files\n\n{machine}\n")
    print(f"plan of the default engine:\n\n```\n{plan}\n```\n")
    headers = ["workload", "side branches", "passes", "median wall s", "best wall s", "CPU s", "CPU util",
               "other load", "speed vs fair share"]  # fmt: skip
    report(FIGURE, headers, rows, args.plot,
           notes=["passes alternate between the three engines; CPU s and util are the median pass's"])  # fmt: skip


def _measure(engines: dict[str, pp.Engine], workloads: dict[str, list[list[str]]],
             passes: dict[str, int]) -> list[list[Any]]:  # fmt: skip
    rows = []
    for workload, batches in workloads.items():
        if not passes[workload]:
            continue
        meters: dict[str, list[CpuMeter]] = {v: [] for v in engines}
        for _ in range(passes[workload]):
            for v, engine in engines.items():
                meters[v].append(_pass(engine, batches))
                print(f"{workload}, {v}: {meters[v][-1].wall:.2f} s", flush=True)
        fair = statistics.median(m.wall for m in meters["fair"])
        for v, label in VARIANTS.items():
            ms = sorted(meters[v], key=lambda m: m.wall)
            mid = ms[len(ms) // 2]
            rows.append([workload, label, len(ms), f"{mid.wall:.2f}", f"{ms[0].wall:.2f}", f"{mid.cpu:.1f}",
                         f"{mid.utilisation:.0%}", f"{max(m.foreign for m in ms):.0%}",
                         f"{fair / mid.wall:.2f}x"])  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
