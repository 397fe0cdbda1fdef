"""The speech application six ways: the blog's attempts against parapipe, on a labelled corpus.

Every variant runs the same analysis on the same files (espeak-ng corpus from
scripts/make_corpus.py, broken files skipped): decode, Silero VAD, then whisper tiny.en
(`Transcribe`), resemblyzer (`Speaker`, against a voice registry with the corpus's enrolled
speakers) and pitch/formant gender (`GenderAge`), merged with `merge_result`.

  (a)  sequential: one process, decode+VAD then the three models one after another, stage
       classes called directly (``s = Transcribe(); s.setup(); s.process(clip)``); every
       library sizes its thread pool to the machine (2 threads here), as outside a worker.
  (a1) the same with one thread per model: this row measures the single-thread CPU seconds of
       every stage, and so the machine limit (their sum / cores).
  (b)  asyncio.gather of the three model calls per file (one process).
  (c)  a ThreadPoolExecutor(3): the three model calls per file in three threads (one process).
  (d)  a plain ProcessPoolExecutor(3); each worker loads a model into a global on first use,
       as in the blog; the parent decodes, runs the VAD and submits the three calls per file.
  (e)  three dedicated processes, one per model, library-default threads, fed by queues.
  (f)  parapipe: Engine(analysis_graph(voices=...), cpus="auto", warmup=3 files,
       mode="throughput") and engine.map over all files.

Each variant lives in its own host process (started from this script, one after another, so
its cold start is measured alone: process start, imports, model loads, one warm-up file).
Then every variant processes the whole corpus once, models loaded and warm, in interleaved
rounds: the files are split into R chunks, every variant does chunk 1 (in a rotating order),
then every variant chunk 2, and so on; a row adds up its rounds. A lone-file section times
single files end to end, adding parapipe with mode="latency" and parapipe with its defaults.
Quality (WER, gender, speaker identification) is checked against labels.json for every row.

Usage: python benchmarks/speech.py [--files N] [--rounds R] [--lone K] [--json PATH] [--quick]
Explained in docs/benchmarks/speech.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import (
    CpuMeter,
    Figure,
    cores_seen,
    machine_line,
    markdown_table,
    parse_args,
    plot_table,
    print_table,
)

from parapipe.worker.spawn import environment

REPO = Path(__file__).resolve().parents[1]
BRANCHES = ("transcribe", "speaker", "gender_age")
KINDS = ("test", "multi", "format")
"""Corpus files that are analysed; enrolment clips go into the registry, broken ones are skipped."""
READY_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- model helpers


def _branch(name: str, voices: str) -> Any:
    """A fresh, not yet set up, stage for one branch (the same classes analysis_graph uses)."""
    from parapipe.audio import GenderAge, Speaker, Transcribe

    if name == "transcribe":
        return Transcribe()
    if name == "speaker":
        return Speaker(voices)
    return GenderAge()


def _summary(merged: dict[str, Any]) -> dict[str, Any]:
    """What the quality check and the cross-variant comparison read from a merged result."""
    return {k: merged[k] for k in ("file", "duration", "text", "speaker", "speakers", "gender")}


def _import_model_libraries() -> None:
    """Import what setup() would import, so import time and load time are reported apart."""
    import faster_whisper  # noqa: F401
    import librosa  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    from resemblyzer import VoiceEncoder  # noqa: F401


def _unpin_all_threads(cores: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            continue


# --------------------------------------------------------------------------- hosts
#
# A host is one process that owns one variant (or, for (a)-(c), three variants that share one
# process and its models). It reports timestamps of its start-up phases, then serves commands
# from the driver: ("run", variant, files) for a timed pass, ("lone", variant, file), ("info",).


class InProcessHost:
    """(a), (b), (c) with library-default threads; (a1) with ``single_thread``."""

    def __init__(self, opts: dict[str, Any], marks: dict[str, float]) -> None:
        self.single = bool(opts.get("single_thread"))
        if self.single:  # the limit's measurement: no CPU lost to page faults, as in our workers
            from parapipe.worker.malloc import keep_freed_memory

            keep_freed_memory()
        all_cores = set(os.sched_getaffinity(0))
        if self.single:  # budgets read the affinity: pp.current().cpus becomes 1 for every stage
            os.sched_setaffinity(0, {min(all_cores)})
        _import_model_libraries()
        marks["imported"] = time.monotonic()
        from parapipe.audio import Decode, Segment

        self.decode, self.vad = Decode(), Segment()
        self.vad.setup()
        self.branches = {name: _branch(name, opts["voices"]) for name in BRANCHES}
        for stage in self.branches.values():
            stage.setup()
        if self.single:  # one thread each is fixed now; let the OS place the process on any core
            _unpin_all_threads(all_cores)
        self.threads = ThreadPoolExecutor(max_workers=3)
        marks["loaded"] = time.monotonic()
        self.cpu: dict[str, float] = {}
        self.one("a", opts["warmup"][0])
        marks["warm"] = time.monotonic()

    def info(self) -> dict[str, Any]:
        return {"copies": 3, "threads": 1 if self.single else len(os.sched_getaffinity(0))}

    def close(self) -> None:
        self.threads.shutdown()

    def _clip(self, path: str) -> Any:
        c0 = time.process_time()
        clip = self.decode.process(path)
        c1 = time.process_time()
        clip = self.vad.process(clip)
        self._charge("decode", c1 - c0)
        self._charge("vad", time.process_time() - c1)
        return clip

    def _charge(self, stage: str, cpu: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    def _sequential(self, path: str) -> dict[str, Any]:
        clip = self._clip(path)
        outs = {}
        for name, stage in self.branches.items():
            c0 = time.process_time()
            outs[name] = stage.process(clip)
            self._charge(name, time.process_time() - c0)
        return outs

    async def _gathered(self, path: str) -> dict[str, Any]:
        clip = self._clip(path)

        async def call(stage: Any) -> Any:
            return stage.process(clip)  # CPU work with no await inside: runs to completion

        outs = await asyncio.gather(*(call(s) for s in self.branches.values()))
        return dict(zip(self.branches, outs, strict=True))

    def _threaded(self, path: str) -> dict[str, Any]:
        clip = self._clip(path)
        futures = {name: self.threads.submit(s.process, clip) for name, s in self.branches.items()}
        return {name: f.result() for name, f in futures.items()}

    def one(self, variant: str, path: str) -> tuple[float, dict[str, Any]]:
        from parapipe.audio import merge_result

        t0 = time.monotonic()
        if variant == "b":
            outs = asyncio.run(self._gathered(path))
        elif variant == "c":
            outs = self._threaded(path)
        else:
            outs = self._sequential(path)
        merged = merge_result(outs)
        return time.monotonic() - t0, _summary(merged)

    def run(self, variant: str, files: list[str]) -> dict[str, Any]:
        self.cpu = {}
        if variant == "b":  # one event loop for the pass, gather per file (the blog's shape)
            return self._run_async(files)
        timed = [self.one(variant, f) for f in files]
        return {"latencies": [t for t, _ in timed], "results": [r for _, r in timed], "cpu": dict(self.cpu)}

    def _run_async(self, files: list[str]) -> dict[str, Any]:
        from parapipe.audio import merge_result

        async def run_all() -> list[tuple[float, dict[str, Any]]]:
            out = []
            for f in files:
                t0 = time.monotonic()
                merged = merge_result(await self._gathered(f))
                out.append((time.monotonic() - t0, _summary(merged)))
            return out

        timed = asyncio.run(run_all())
        return {"latencies": [t for t, _ in timed], "results": [r for _, r in timed], "cpu": {}}

    def lone(self, variant: str, path: str) -> tuple[float, dict[str, Any]]:
        return self.one(variant, path)


_lazy_models: dict[str, Any] = {}
"""(d): per-worker global, filled on first use, as in the blog."""


def _lazy_call(name: str, voices: str, clip: Any) -> tuple[int, bool, Any]:
    loaded = name not in _lazy_models
    if loaded:
        warnings.filterwarnings("ignore")
        stage = _branch(name, voices)
        stage.setup()
        _lazy_models[name] = stage
    return os.getpid(), loaded, _lazy_models[name].process(clip)


class PoolHost:
    """(d): the parent decodes and runs the VAD, then submits the three calls per file."""

    def __init__(self, opts: dict[str, Any], marks: dict[str, float]) -> None:
        from parapipe.audio import Decode, Segment

        self.voices = opts["voices"]
        self.decode, self.vad = Decode(), Segment()
        self.vad.setup()
        marks["imported"] = time.monotonic()
        self.pool = ProcessPoolExecutor(max_workers=3, mp_context=mp.get_context("spawn"))
        self.loads: dict[str, int] = dict.fromkeys(BRANCHES, 0)
        self.first_file: float | None = None
        # Lazy loading means "ready" is when every worker holds every model; until then a call
        # may land on a worker that still has to load it. Keep sending the warm-up file.
        loaded: set[tuple[int, str]] = set()
        for _ in range(30):
            t0 = time.monotonic()
            _, _, pairs = self._analyse(opts["warmup"][0])
            self.first_file = self.first_file or time.monotonic() - t0
            loaded |= pairs
            if len({pid for pid, _ in loaded}) == 3 and len(loaded) == 9:
                break
        marks["loaded"] = marks["warm"] = time.monotonic()

    def _analyse(self, path: str) -> tuple[float, dict[str, Any], set[tuple[int, str]]]:
        from parapipe.audio import merge_result

        t0 = time.monotonic()
        clip = self.vad.process(self.decode.process(path))
        futures = {name: self.pool.submit(_lazy_call, name, self.voices, clip) for name in BRANCHES}
        outs, pairs = {}, set()
        for name, fut in futures.items():
            pid, loaded, outs[name] = fut.result()
            self.loads[name] += loaded
            pairs.add((pid, name))
        return time.monotonic() - t0, _summary(merge_result(outs)), pairs

    def info(self) -> dict[str, Any]:
        return {"copies": sum(self.loads.values()), "loads": dict(self.loads), "first_file": self.first_file,
                "threads": len(os.sched_getaffinity(0))}

    def close(self) -> None:
        self.pool.shutdown()

    def run(self, variant: str, files: list[str]) -> dict[str, Any]:
        timed = [self._analyse(f)[:2] for f in files]
        return {"latencies": [t for t, _ in timed], "results": [r for _, r in timed], "cpu": {}}

    def lone(self, variant: str, path: str) -> tuple[float, dict[str, Any]]:
        return self._analyse(path)[:2]


def _dedicated_worker(name: str, voices: str, inbox: Any, outbox: Any) -> None:
    warnings.filterwarnings("ignore")
    stage = _branch(name, voices)
    stage.setup()
    outbox.put(("ready", os.getpid()))
    while (clip := inbox.get()) is not None:
        outbox.put(stage.process(clip))


class DedicatedHost:
    """(e): one process per model, library-default threads, a queue each way."""

    def __init__(self, opts: dict[str, Any], marks: dict[str, float]) -> None:
        from parapipe.audio import Decode, Segment

        ctx = mp.get_context("spawn")
        self.decode, self.vad = Decode(), Segment()
        self.vad.setup()
        marks["imported"] = time.monotonic()
        self.queues = {name: (ctx.Queue(), ctx.Queue()) for name in BRANCHES}
        self.procs = [ctx.Process(target=_dedicated_worker, args=(name, opts["voices"], *qs), daemon=True)
                      for name, qs in self.queues.items()]
        for p in self.procs:
            p.start()
        for _, outbox in self.queues.values():
            outbox.get(timeout=READY_TIMEOUT_S)
        marks["loaded"] = time.monotonic()
        self.one(opts["warmup"][0])
        marks["warm"] = time.monotonic()

    def one(self, path: str) -> tuple[float, dict[str, Any]]:
        from parapipe.audio import merge_result

        t0 = time.monotonic()
        clip = self.vad.process(self.decode.process(path))
        for inbox, _ in self.queues.values():
            inbox.put(clip)
        outs = {name: outbox.get() for name, (_, outbox) in self.queues.items()}
        return time.monotonic() - t0, _summary(merge_result(outs))

    def info(self) -> dict[str, Any]:
        return {"copies": 3, "threads": len(os.sched_getaffinity(0))}

    def close(self) -> None:
        for inbox, _ in self.queues.values():
            inbox.put(None)
        for p in self.procs:
            p.join(30)

    def run(self, variant: str, files: list[str]) -> dict[str, Any]:
        timed = [self.one(f) for f in files]
        return {"latencies": [t for t, _ in timed], "results": [r for _, r in timed], "cpu": {}}

    def lone(self, variant: str, path: str) -> tuple[float, dict[str, Any]]:
        return self.one(path)


class EngineHost:
    """(f) and the lone-file parapipe rows: one Engine over analysis_graph(voices=...)."""

    def __init__(self, opts: dict[str, Any], marks: dict[str, float]) -> None:
        import parapipe as pp
        from parapipe.audio import analysis_graph

        marks["imported"] = time.monotonic()
        options = {k: opts["warmup"] if v == "<warmup>" else v for k, v in opts["engine"].items()}
        graph = analysis_graph(voices=opts["voices"])
        self.engine = pp.Engine(graph, **options).start()
        marks["loaded"] = time.monotonic()
        self.engine.run(opts["warmup"][0])
        marks["warm"] = time.monotonic()

    def info(self) -> dict[str, Any]:
        workers = self.engine.workers()
        by_stage: dict[str, list[int]] = {}
        for w in workers:
            by_stage.setdefault(w["stage"], []).append(w["threads"])
        shape = ", ".join(f"{s} {len(t)}x{max(t)}t" for s, t in by_stage.items())
        return {"copies": sum(len(by_stage.get(b, [])) for b in BRANCHES), "plan": self.engine.plan(),
                "shape": shape}

    def close(self) -> None:
        self.engine.close()

    def run(self, variant: str, files: list[str]) -> dict[str, Any]:
        pulled: dict[str, float] = {}

        def feed() -> Iterator[str]:
            for f in files:
                pulled[f] = time.monotonic()  # engine.map submits each item as it pulls it
                yield f

        latencies, results = {}, {}
        for merged in self.engine.map(feed(), ordered=False):  # as completed: latency is honest
            latencies[merged["file"]] = time.monotonic() - pulled[merged["file"]]
            results[merged["file"]] = _summary(merged)
        return {"latencies": [latencies[f] for f in files], "results": [results[f] for f in files], "cpu": {}}

    def lone(self, variant: str, path: str) -> tuple[float, dict[str, Any]]:
        t0 = time.monotonic()
        merged = self.engine.run(path)
        return time.monotonic() - t0, _summary(merged)


HOSTS: dict[str, Callable[[dict[str, Any], dict[str, float]], Any]] = {
    "inprocess": InProcessHost, "pool": PoolHost, "dedicated": DedicatedHost, "engine": EngineHost,
}


def _host_main(kind: str, conn: Any, opts: dict[str, Any]) -> None:
    marks = {"entry": time.monotonic()}
    warnings.filterwarnings("ignore")  # resemblyzer's and librosa's deprecation notices
    host = None
    try:
        host = HOSTS[kind](opts, marks)
        conn.send(("ok", {"marks": marks, **host.info()}))
        while True:
            cmd, *args = conn.recv()
            if cmd == "stop":
                break
            conn.send(("ok", getattr(host, cmd)(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        if host is not None:
            host.close()


# --------------------------------------------------------------------------- driver side


@dataclass
class Host:
    """The driver's handle on one host process."""

    label: str
    kind: str
    opts: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    cold: dict[str, float] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    memory_mb: float = 0.0

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_host_main, args=(self.kind, child, self.opts), name=self.label)
        t0 = time.monotonic()
        with environment(self.env):
            self.proc.start()
        self.info = self._answer(READY_TIMEOUT_S)
        marks = self.info.pop("marks")
        self.cold = {
            "interpreter": marks["entry"] - t0,
            "imports": marks["imported"] - marks["entry"],
            "models": marks["loaded"] - marks["imported"],
            "warmup": marks["warm"] - marks["loaded"],
            "total": marks["warm"] - t0,
        }
        self.pids = self._tree()

    def _tree(self) -> list[int]:
        me = psutil.Process(self.proc.pid)
        return [me.pid, *(c.pid for c in me.children(recursive=True))]

    def _answer(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise SystemExit(f"{self.label}: no answer in {timeout:.0f} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise SystemExit(f"{self.label} failed:\n{value}")
        return value

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self._answer(3600)

    def measure_memory(self) -> None:
        """Proportional set size of the host and all its workers (shared pages split fairly)."""
        total = 0
        for pid in self._tree():
            try:
                total += psutil.Process(pid).memory_full_info().pss
            except psutil.Error:
                continue
        self.memory_mb = total / 2**20

    def stop(self) -> None:
        with suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


@dataclass
class Pass:
    """One timed pass of one variant over the files."""

    meter: CpuMeter
    latencies: list[float]
    results: list[dict[str, Any]]
    cpu: dict[str, float]


def timed_pass(host: Host, variant: str, files: list[str]) -> Pass:
    with CpuMeter(host.pids) as meter:
        out = host.call("run", variant, files)
    return Pass(meter, out["latencies"], out["results"], out["cpu"])


# --------------------------------------------------------------------------- corpus


def build_corpus(root: Path) -> dict[str, Any]:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_corpus.py"), str(root)], check=True,
                   capture_output=True)
    return json.loads((root / "labels.json").read_text())


def pick_files(root: Path, labels: dict[str, Any], n: int | None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The analysed files (test clips, the dialogue, the format copies), cycled with copies past
    the end so every path stays unique; and each path's label."""
    wanted = [(KINDS.index(lab["kind"]), rel) for rel, lab in labels["files"].items() if lab["kind"] in KINDS]
    base = [rel for _, rel in sorted(wanted)]
    n = len(base) if n is None else n
    files, by_path = [], {}
    for k in range(n):
        rel = base[k % len(base)]
        path = root / rel
        if k >= len(base):
            path = root / "cycled" / f"{k}_{Path(rel).name}"
            path.parent.mkdir(exist_ok=True)
            shutil.copy(root / rel, path)
        files.append(str(path))
        by_path[str(path)] = labels["files"][rel]
    return files, by_path


def _enroll(root: str, db: str) -> None:
    warnings.filterwarnings("ignore")
    from parapipe.audio import VoiceRegistry
    from parapipe.audio.embedding import VoiceEmbedder

    labels = json.loads((Path(root) / "labels.json").read_text())
    by_speaker: dict[str, list[Path]] = {}
    for rel, lab in sorted(labels["files"].items()):
        if lab["kind"] == "enroll":
            by_speaker.setdefault(lab["speaker"], []).append(Path(root) / rel)
    embedder = VoiceEmbedder()
    with VoiceRegistry(db) as registry:
        for name, files in by_speaker.items():
            registry.enroll(name, *files, embedder=embedder)
        registry.calibrate()


def enroll(root: Path, db: Path) -> None:
    """Enrol the corpus's enrolment clips in a fresh process (also compiles librosa's kernels once)."""
    p = mp.get_context("spawn").Process(target=_enroll, args=(str(root), str(db)))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"enrolment failed (exit {p.exitcode})")


# --------------------------------------------------------------------------- quality


def quality(results: list[dict[str, Any]], labels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """WER over every transcript, gender accuracy, enrolled-speaker accuracy, unknown-label stability."""
    import jiwer

    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    refs = [labels[r["file"]]["text"] for r in results]
    hyps = [r["text"] or "" for r in results]
    wer = jiwer.wer(refs, hyps, reference_transform=norm, hypothesis_transform=norm)
    gendered = [(r["gender"], labels[r["file"]]["gender"]) for r in results if labels[r["file"]]["gender"]]
    enrolled = [(r["speaker"], labels[r["file"]]["speaker"]) for r in results if labels[r["file"]].get("enrolled")]
    unknown: dict[str, set[str]] = {}
    for r in results:
        lab = labels[r["file"]]
        if lab["kind"] != "multi" and lab.get("enrolled") is False:
            unknown.setdefault(lab["speaker"], set()).add(str(r["speaker"]))
    dialogue = [r for r in results if labels[r["file"]]["kind"] == "multi"]
    return {
        "wer": wer,
        "gender": (sum(g == want for g, want in gendered), len(gendered)),
        "speaker": (sum(s == want for s, want in enrolled), len(enrolled)),
        "unknown": {name: sorted(found) for name, found in sorted(unknown.items())},
        "dialogue": dialogue[0]["speakers"] if dialogue else None,
    }


# --------------------------------------------------------------------------- report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Total:
    """One variant over the whole corpus: its passes over the chunks, added up."""

    passes: list[Pass]
    order: list[str]

    @property
    def wall(self) -> float:
        return sum(p.meter.wall for p in self.passes)

    @property
    def cpu(self) -> float:
        return sum(p.meter.cpu for p in self.passes)

    @property
    def utilisation(self) -> float:
        return self.cpu / (self.wall * cores_seen())

    @property
    def foreign(self) -> float:
        return sum(p.meter.foreign * p.meter.wall for p in self.passes) / self.wall

    @property
    def latencies(self) -> list[float]:
        return [t for p in self.passes for t in p.latencies]

    @property
    def results(self) -> list[dict[str, Any]]:
        """In corpus order, whatever the chunking."""
        by_file = {r["file"]: r for p in self.passes for r in p.results}
        return [by_file[f] for f in self.order]

    def stage_cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.passes:
            for k, v in p.cpu.items():
                out[k] = out.get(k, 0.0) + v
        return out


VARIANTS: dict[str, str] = {
    "a": "(a) sequential, one process",
    "b": "(b) asyncio.gather per file",
    "c": "(c) ThreadPoolExecutor(3) per file",
    "d": "(d) ProcessPoolExecutor(3), lazy models",
    "e": "(e) 3 dedicated processes",
    "f": '(f) parapipe, cpus="auto", throughput',
    "a1": "(a1) sequential, 1 thread per model",
}
LONE_EXTRA = {"L": 'parapipe, cpus="auto", mode="latency"', "P": "parapipe, defaults: Engine(analysis_graph())"}


FIGURE = Figure("the speech corpus, models warm: wall seconds (lower is better)", ("variant",), ("wall s",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=None, help="files per variant (default: all 27 speech files; "
                        "more are cycled copies)")
    parser.add_argument("--rounds", type=int, default=3, help="the files are split into this many chunks; every "
                        "variant does chunk 1, then every variant chunk 2, ... (default 3)")
    parser.add_argument("--lone", type=int, default=6, help="files timed alone for the lone-file section (default 6)")
    parser.add_argument("--quick", action="store_true", help="6 files, one round, 2 lone files: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the raw measurements to this file")
    args = parse_args(parser, FIGURE, argv)
    if args is None:
        return 0
    n_files, rounds, n_lone = (6, 1, 2) if args.quick else (args.files, args.rounds, args.lone)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parapipe-speech-") as tmp:
        root = Path(tmp) / "corpus"
        labels = build_corpus(root)
        files, by_path = pick_files(root, labels, n_files)
        enrolled = Path(tmp) / "voices.db"
        enroll(root, enrolled)
        tests = [f for f in files if by_path[f]["kind"] == "test"] or files
        lone_files = tests[:: max(1, len(tests) // max(1, n_lone))][:n_lone]
        warm = files[:3]
        report = run_all(Path(tmp), files, lone_files, warm, enrolled, max(1, min(rounds, len(files))))
    print_report(report, files, by_path, lone_files, time.monotonic() - started, args.plot)
    if args.json:
        args.json.write_text(json.dumps(_raw(report), indent=1) + "\n")
    return 0


def _raw(rep: dict[str, Any]) -> dict[str, Any]:
    """Every pass, cold start and lone-file time, for looking closer at one run."""
    def meter(m: CpuMeter) -> dict[str, float]:
        return {"wall": m.wall, "cpu": m.cpu, "foreign": m.foreign}

    return {
        "passes": {v: [{**meter(p.meter), "latencies": p.latencies, "stage_cpu": p.cpu} for p in t.passes]
                   for v, t in rep["totals"].items()},
        "cold": {h.label: {**h.cold, "memory_mb": h.memory_mb, "copies": h.info.get("copies")}
                 for h in rep["hosts"].values()},
        "lone": rep["lone"],
        "results": {v: t.results for v, t in rep["totals"].items()},
    }


def run_all(tmp: Path, files: list[str], lone_files: list[str], warm: list[str], enrolled: Path,
            rounds: int) -> dict[str, Any]:
    from parapipe.worker.spawn import thread_env

    def opts(name: str, **extra: Any) -> dict[str, Any]:
        db = tmp / f"voices-{name}.db"  # each host learns its own unknown-N labels
        shutil.copy(enrolled, db)
        return {"voices": str(db), "warmup": warm, **extra}

    hosts = {
        "abc": Host("(a)-(c) one process, library-default threads", "inprocess", opts("abc")),
        "a1": Host("(a1) one process, 1 thread per model", "inprocess", opts("a1", single_thread=True),
                   env=thread_env(1)),
        "d": Host("(d) ProcessPoolExecutor(3), lazy models", "pool", opts("d")),
        "e": Host("(e) 3 dedicated processes", "dedicated", opts("e")),
        "f": Host('(f) parapipe, cpus="auto", throughput', "engine",
                  opts("f", engine={"cpus": "auto", "warmup": "<warmup>", "mode": "throughput"})),
        "L": Host('parapipe, cpus="auto", mode="latency"', "engine",
                  opts("L", engine={"cpus": "auto", "warmup": "<warmup>", "mode": "latency"})),
        "P": Host("parapipe, defaults: Engine(analysis_graph())", "engine", opts("P", engine={})),
    }
    host_of = {"a": "abc", "b": "abc", "c": "abc", "d": "d", "e": "e", "f": "f", "a1": "a1", "L": "L", "P": "P"}
    try:
        for host in hosts.values():  # one at a time: each cold start is measured alone
            _say(f"starting {host.label} ...")
            host.start()
            _say(f"  ready in {host.cold['total']:.1f} s")
        # Load on this shared machine comes and goes over minutes. Each variant does the whole
        # corpus once, but in chunks, and every variant does a chunk before any does the next,
        # in an order that rotates, so a burst of load elsewhere lands on all of them alike.
        passes: dict[str, list[Pass]] = {v: [] for v in VARIANTS}
        order = list(VARIANTS)
        for r in range(rounds):
            chunk = files[r::rounds]
            for v in order[r % len(order):] + order[: r % len(order)]:
                _say(f"round {r + 1}/{rounds} ({len(chunk)} files): {VARIANTS[v]} ...")
                passes[v].append(timed_pass(hosts[host_of[v]], v, chunk))
                p = passes[v][-1]
                _say(f"  {p.meter.wall:.1f} s, other load {p.meter.foreign:.0%}")
        lone: dict[str, list[float]] = {v: [] for v in [*VARIANTS, *LONE_EXTRA]}
        lone_meters: list[CpuMeter] = []
        names = list(lone)
        for k, f in enumerate(lone_files):  # interleaved per file, so load elsewhere hits every variant alike
            _say(f"lone file {Path(f).name} ...")
            with CpuMeter(pid for h in hosts.values() for pid in h.pids) as meter:  # all ours, none "other"
                for v in names[k % len(names):] + names[: k % len(names)]:
                    seconds, _ = hosts[host_of[v]].call("lone", v, f)
                    lone[v].append(seconds)
            lone_meters.append(meter)
        hosts["d"].info.update(hosts["d"].call("info"))  # lazy loads may have gone on during the rounds
        for host in hosts.values():
            host.measure_memory()
    finally:
        for host in hosts.values():
            if hasattr(host, "proc"):
                host.stop()
    totals = {v: Total(ps, files) for v, ps in passes.items()}
    return {"hosts": hosts, "host_of": host_of, "totals": totals, "rounds": rounds, "lone": lone,
            "lone_foreign": _median([m.foreign for m in lone_meters])}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _shape(variant: str, host: Host) -> str:
    threads = host.info.get("threads")
    return {
        "a": f"1 proc x {threads} threads",
        "a1": "1 proc x 1 thread",
        "b": f"1 proc, event loop x {threads} threads",
        "c": f"1 proc, 3 threads x {threads} threads",
        "d": f"3 procs x 3 models x {threads} threads",
        "e": f"3 procs x {threads} threads",
    }.get(variant, host.info.get("shape", "?"))


def print_report(rep: dict[str, Any], files: list[str], labels: dict[str, dict[str, Any]], lone_files: list[str],
                 elapsed: float, plot: Path | None = None) -> None:
    hosts, host_of, totals = rep["hosts"], rep["host_of"], rep["totals"]
    cores = cores_seen()
    base = totals["a"].wall
    audio_s = sum(r["duration"] for r in totals["a"].results)
    single = totals["a1"].stage_cpu()
    limit_cpu = sum(single.values())
    limit = limit_cpu / cores

    print(f"## Speech benchmark: {len(files)} files ({audio_s:.0f} s of audio) per variant, "
          f"in {rep['rounds']} interleaved rounds\n")
    print(machine_line())
    print(f"cores seen: {cores} (os.sched_getaffinity); whole run {elapsed / 60:.1f} min\n")
    print('engine.plan() of (f), Engine(analysis_graph(voices=...), cpus="auto", warmup=3 files, '
          'mode="throughput"):\n')
    print("```\n" + hosts["f"].info["plan"] + "\n```\n")

    headers = ["variant", "processes x threads", "wall s", "per round s", "per-file p50 s", "CPU s", "CPU util",
               "other load", "speedup vs (a)", "model copies"]
    table = []
    for v, label in VARIANTS.items():
        t, host = totals[v], hosts[host_of[v]]
        per_round = "/".join(f"{p.meter.wall:.1f}" for p in t.passes)
        table.append([label, _shape(v, host), f"{t.wall:.1f}", per_round, f"{_median(t.latencies):.2f}",
                      f"{t.cpu:.1f}", f"{t.utilisation:.0%}", f"{t.foreign:.0%}", f"{base / t.wall:.2f}x",
                      str(host.info["copies"])])
    round_limits = [sum(p.cpu.values()) / cores for p in totals["a1"].passes]
    table.append([f"machine limit: (a1) CPU s / {cores} cores", "-", f"{limit:.1f}",
                  "/".join(f"{x:.1f}" for x in round_limits), "-", f"{limit_cpu:.1f}", "100%", "-",
                  f"{base / limit:.2f}x", "-"])
    best = min((v for v in VARIANTS if v != "f"), key=lambda v: totals[v].wall)
    if plot:
        plot_table(FIGURE, headers, table, plot)
    print_table(headers, table, title="Throughput: the whole corpus, models loaded and warm", notes=[
        "single-thread CPU s per stage, whole corpus, (a1): " + ", ".join(f"{k} {v:.1f}" for k, v in single.items()),
        "CPU s per stage with library-default threads, (a): "
        + ", ".join(f"{k} {v:.1f}" for k, v in totals["a"].stage_cpu().items()),
        f"(f) wall / machine limit: {totals['f'].wall / limit:.2f} (per round: "
        + "/".join(f"{p.meter.wall / x:.2f}" for p, x in zip(totals["f"].passes, round_limits, strict=True))
        + f"); best other row: {VARIANTS[best]} "
        f"({totals[best].wall:.1f} s), (f)'s speedup over it: {totals[best].wall / totals['f'].wall:.2f}x",
    ])

    print()
    cold_rows = []
    for host in hosts.values():
        c = host.cold
        loads = host.info.get("loads")
        copies = f"{host.info['copies']}" + (f" ({', '.join(f'{k} {n}x' for k, n in loads.items())})" if loads else "")
        cold_rows.append([host.label, str(len(host.pids)), copies, f"{c['interpreter']:.1f}", f"{c['imports']:.1f}",
                          f"{c['models']:.1f}", f"{c['warmup']:.1f}", f"{c['total']:.1f}", f"{host.memory_mb:.0f}"])
    print_table(["host", "processes", "model copies", "interpreter s", "imports s", "models loaded s",
                 "warm-up s", "start to ready s", "memory MB (PSS)"], cold_rows,
                title="Cold start, each host started alone", notes=[
                    "(d): 'models loaded' runs the warm-up file until every worker has loaded every model "
                    f"(first file answered after {hosts['d'].info.get('first_file') or 0:.1f} s)",
                    "parapipe hosts: 'models loaded' is Engine.start(); with cpus=\"auto\" that includes running "
                    "the 3 warm-up files, re-planning and starting the extra replicas",
                ])

    print()
    lone, singles = rep["lone"], ("a", "a1", "b", "c")
    best_single = min(singles, key=lambda v: _median(lone[v]))
    lone_rows = []
    for v in lone:
        label = VARIANTS.get(v) or LONE_EXTRA[v]
        lone_rows.append([label, _shape(v, hosts[host_of[v]]), f"{_median(lone[v]):.2f}", f"{min(lone[v]):.2f}",
                          f"{_median(lone[best_single]) / _median(lone[v]):.2f}x"])
    names = ", ".join(Path(f).name for f in lone_files)
    print_table(["variant", "processes x threads", "median s", "min s",
                 f"speed vs best single-process ({best_single})"], lone_rows,
                title=f"Lone-file latency: one file at a time, end to end ({len(lone_files)} files)",
                notes=[f"files: {names}; other load (median over files): {rep['lone_foreign']:.0%}",
                       'plan of parapipe mode="latency":', "```", hosts["L"].info["plan"], "```",
                       "plan of parapipe defaults:", "```", hosts["P"].info["plan"], "```"])

    print()
    print("### Quality of each row's results against labels.json\n")
    qrows = []
    ref_a, ref_a1 = totals["a"].results, totals["a1"].results
    for v, label in VARIANTS.items():
        results = totals[v].results
        q = quality(results, labels)
        same = [sum(x["text"] == y["text"] for x, y in zip(ref, results, strict=True)) for ref in (ref_a, ref_a1)]
        unknown = "; ".join(f"{k} -> {', '.join(s)}" for k, s in q["unknown"].items())
        qrows.append([label, f"{q['wer']:.1%}", f"{q['gender'][0]}/{q['gender'][1]}",
                      f"{q['speaker'][0]}/{q['speaker'][1]}", unknown or "-", ", ".join(q["dialogue"] or []) or "-",
                      f"{same[0]}/{len(results)}, {same[1]}/{len(results)}"])
    print(markdown_table(["variant", "WER", "gender correct", "enrolled speaker correct", "unknown voices",
                          "dialogue speakers", "same text as (a), (a1)"], qrows))


if __name__ == "__main__":
    raise SystemExit(main())
