"""The real-GPU check of parapipe: several models and replicas sharing one GPU, end to end.

Run on a machine with a CUDA GPU (torch with CUDA, numpy, psutil, threadpoolctl; parapipe from
``pip install --no-deps -e .``)::

    python scripts/gpu_check.py

It finishes in well under 5 minutes and prints one table. What it runs:

1. two different torch models (an MLP and a small CNN) in one ``Parallel``, half a GPU each;
2. four replicas of one model sharing the GPU at ``gpus=0.25`` each (so each is capped to a
   quarter of the memory), against the same model on the CPU;
3. a batching stage (``process_batch``) on the GPU, against the CPU;
4. an image pipeline: decode/resize on CPU stages, the CNN on the GPU, top-k on a CPU stage;
5. a worker SIGKILLed in the middle of a batch: its items are retried, and its GPU memory freed.

CUDA is initialised in this (parent) process first, on purpose: workers are spawned, so that must
not break them (with ``fork`` it would). ``--cpu`` runs the same code paths on a machine without a
GPU, degraded: the planner is given a pretend 16 GiB device, the models run on the CPU, and the
table says so. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import parapipe as pp

GiB = 2**30
DEADLINE_S = 270.0
"""Stop starting new checks past this, so the whole run stays under 5 minutes."""


def _device() -> torch.device:
    """The worker's GPU when it was given one and CUDA works here, else the CPU (--cpu runs)."""
    return torch.device("cuda" if pp.current().gpus and torch.cuda.is_available() else "cpu")


def _seen() -> dict[str, Any]:
    """What a replica sees: its device and its memory use, reported with every result."""
    dev = _device()
    on_gpu = dev.type == "cuda"
    return {
        "pid": os.getpid(),
        "replica": pp.current().replica,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "fraction": pp.current().gpu_fraction,
        "mem_mib": round(torch.cuda.max_memory_allocated() / 2**20) if on_gpu else None,
    }


class MLP(pp.Stage):
    """A 4-layer MLP on 1024-float vectors."""

    def __init__(self, width: int = 2048) -> None:
        self.width = width

    def setup(self) -> None:
        torch.manual_seed(0)
        w = self.width
        layers = [torch.nn.Linear(1024, w), torch.nn.ReLU(), torch.nn.Linear(w, w), torch.nn.ReLU(),
                  torch.nn.Linear(w, w), torch.nn.ReLU(), torch.nn.Linear(w, 10)]  # fmt: skip
        self.net = torch.nn.Sequential(*layers).to(_device()).eval()

    def process(self, item: np.ndarray) -> dict[str, Any]:
        return self._forward([item])[0]

    def _forward(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.stack(items)).to(_device()))
        seen = _seen()
        return [{"label": int(i), **seen} for i in out.argmax(1).tolist()]


class BatchedMLP(MLP):
    """The MLP with ``process_batch``: items from ``map`` reach it up to 64 at a time."""

    batch_size = 64
    batch_wait = 0.005

    def process_batch(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        return self._forward(items)


class CNN(pp.Stage):
    """A small convolutional classifier on float images (3 x S x S)."""

    def setup(self) -> None:
        torch.manual_seed(0)
        c = torch.nn.Conv2d
        self.net = torch.nn.Sequential(
            c(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            c(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            c(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(128, 100),
        ).to(_device()).eval()  # fmt: skip

    def process(self, item: np.ndarray) -> dict[str, Any]:
        return self._forward([item])[0]

    def _forward(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(np.stack(items)).to(_device())).float().cpu().numpy()
        seen = _seen()
        return [{"logits": row, **seen} for row in logits]


class BatchedCNN(CNN):
    """The CNN fed in batches of up to 32 images, as an image service would run it."""

    batch_size = 32
    batch_wait = 0.005

    def process_batch(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        return self._forward(items)


def decode(raw: np.ndarray) -> np.ndarray:
    """CPU pre-processing: uint8 HWC image to normalised float CHW at half size."""
    x = raw[::2, ::2].astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - 0.45) / 0.25).transpose(2, 0, 1))


def top5(result: dict[str, Any]) -> dict[str, Any]:
    """CPU post-processing: the five best classes."""
    return {**result, "logits": None, "top5": np.argsort(result["logits"])[-5:][::-1].tolist()}


class SlowBatch(pp.Stage):
    """GPU batches that take long enough to be killed in the middle: each announces itself with a
    file named for its pid, then runs matmuls for ``seconds``. The first worker also holds
    ``HOLD`` of GPU memory (its replacement does not), so freed memory can be seen device-wide."""

    batch_size = 8
    batch_wait = 0.01
    retries = 2
    HOLD = 4 * GiB

    def __init__(self, flag_dir: str, seconds: float) -> None:
        self.flag_dir = flag_dir
        self.seconds = seconds

    def setup(self) -> None:
        self.w = torch.randn(1024, 1024, device=_device())
        first = not Path(self.flag_dir, "held").exists()
        Path(self.flag_dir, "held").touch()
        if first and _device().type == "cuda":
            self.hold = torch.ones(self.HOLD // 4, device=_device())

    def process_batch(self, items: list[int]) -> list[dict[str, Any]]:
        Path(self.flag_dir, f"busy-{os.getpid()}").touch()
        end = time.monotonic() + self.seconds
        x = torch.randn(256, 1024, device=_device())
        while time.monotonic() < end:
            x = torch.tanh(x @ self.w)
        if x.is_cuda:
            torch.cuda.synchronize()
        seen = _seen()
        return [{"item": i, **seen} for i in items]


# --------------------------------------------------------------------------- the checks


class Report:
    """The one table: a row per replica or measurement; failures are collected, not raised."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.failures: list[str] = []

    def replicas(
        self, check: str, stage: str, results: list[dict[str, Any]], engine: pp.Engine, rate: str = ""
    ) -> None:
        nvml = {w["pid"]: w.get("gpu_memory_bytes") for w in engine.workers()}
        by_pid: dict[int, dict[str, Any]] = {}
        for r in results:
            if r["pid"] not in by_pid or (r["mem_mib"] or 0) > (by_pid[r["pid"]]["mem_mib"] or 0):
                by_pid[r["pid"]] = r
        for i, r in enumerate(sorted(by_pid.values(), key=lambda r: r["replica"])):
            used = nvml.get(r["pid"])
            mem = f"{r['mem_mib']}" if r["mem_mib"] is not None else "-"
            mem += f" / {used / 2**20:.0f}" if used else ""
            share = f"{r['fraction']:g}" if r["fraction"] else "-"
            self.rows.append((check, f"{stage}#{r['replica']}", r["device"], r["visible"], share, mem,
                              rate if i == 0 else "", ""))  # fmt: skip

    def line(self, check: str, what: str, rate: str = "", note: str = "") -> None:
        self.rows.append((check, what, "", "", "", "", rate, note))

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)

    def print(self, mode: str) -> None:
        head = ("check", "stage#replica", "device seen", "CUDA_VISIBLE", "share", "MiB alloc / NVML", "items/s", "note")
        cells = [head, *self.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
        print(f"\nparapipe GPU check ({mode})")
        for n, row in enumerate(cells):
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print("\nall checks passed" if not self.failures else "\nFAILED: " + "; ".join(self.failures))


def _rate(engine: pp.Engine, items: list[Any]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    out = list(engine.map(items))
    return out, len(items) / (time.perf_counter() - start)


class _Pair:
    """One item for both branches of the Parallel: each model takes its own field."""

    def __init__(self, vec: np.ndarray, img: np.ndarray) -> None:
        self.vec, self.img = vec, img


class PairMLP(MLP):
    def process(self, item: _Pair) -> dict[str, Any]:
        return super().process(item.vec)


class PairCNN(CNN):
    def process(self, item: _Pair) -> dict[str, Any]:
        return super().process(item.img)


def two_models(report: Report, opts: dict[str, Any], n: int) -> None:
    """Check 1: one item goes to both models (`_Pair`), each on half of the same GPU."""
    graph = pp.Parallel(mlp=PairMLP().options(name="mlp", gpus=0.5), cnn=PairCNN().options(name="cnn", gpus=0.5))
    rng = np.random.default_rng(0)
    items = [_Pair(rng.normal(size=1024).astype(np.float32), rng.normal(size=(3, 64, 64)).astype(np.float32))
             for _ in range(max(4, n))]  # fmt: skip
    with pp.Engine(graph, **opts) as engine:
        outs = list(engine.map(items))
        report.replicas("1 two models", "mlp", [o["mlp"] for o in outs], engine)
        report.replicas("1 two models", "cnn", [o["cnn"] for o in outs], engine)
        devices = {w["stage"]: w["gpus"] for w in engine.workers()}
    report.expect(devices["mlp"] == devices["cnn"], "two models at 0.5 should share one device")


def four_replicas(report: Report, opts: dict[str, Any], n: int, cpu_threads: int) -> None:
    items = list(np.random.default_rng(1).normal(size=(n, 1024)).astype(np.float32))
    with pp.Engine(MLP().options(name="mlp4", gpus=0.25, replicas=4), **opts) as engine:
        out, gpu_rate = _rate(engine, items)
        report.replicas("2 four at 0.25", "mlp4", out, engine, f"{gpu_rate:.0f}")
        devices = {w["gpus"] for w in engine.workers()}
    report.expect(len(devices) == 1 and len({o["pid"] for o in out}) == 4, "four replicas should share one device")
    with pp.Engine(MLP().options(name="mlp-cpu", cpus=cpu_threads)) as engine:
        _, cpu_rate = _rate(engine, items[: max(8, n // 4)])
    report.line("2 four at 0.25", f"same model on CPU ({cpu_threads} threads)", f"{cpu_rate:.0f}",
                f"GPU/CPU = {gpu_rate / cpu_rate:.1f}x")  # fmt: skip


def batching(report: Report, opts: dict[str, Any], n: int, cpu_threads: int) -> None:
    items = list(np.random.default_rng(2).normal(size=(n, 1024)).astype(np.float32))
    with pp.Engine(BatchedMLP().options(name="batched", gpus=0.5), **opts) as engine:
        out, gpu_rate = _rate(engine, items)
        batches = engine.stats()["batched"].get("batches", {})
        report.replicas("3 batching", "batched", out, engine, f"{gpu_rate:.0f}")
    with pp.Engine(BatchedMLP().options(name="batched-cpu", cpus=cpu_threads)) as engine:
        _, cpu_rate = _rate(engine, items)
    report.line("3 batching", f"same batches on CPU ({cpu_threads} threads)", f"{cpu_rate:.0f}",
                f"GPU/CPU = {gpu_rate / cpu_rate:.1f}x; mean batch {batches.get('mean_size', '?')}")  # fmt: skip


def image_pipeline(report: Report, opts: dict[str, Any], n: int, side: int, cpu_threads: int) -> None:
    raws = list(np.random.default_rng(3).integers(0, 255, size=(n, side, side, 3), dtype=np.uint8))

    def graph(**model_opts: Any) -> pp.Pipeline:
        return pp.Pipeline(pp.stage(decode, replicas=2), BatchedCNN().options(name="cnn", **model_opts), pp.stage(top5))

    with pp.Engine(graph(gpus=0.5), **opts) as engine:
        out, gpu_rate = _rate(engine, raws)
        report.replicas("4 image pipeline", "cnn", out, engine, f"{gpu_rate:.0f}")
        cpu_side = [w for w in engine.workers() if w["stage"] != "cnn"]
    report.expect(all(not w["gpus"] for w in cpu_side), "pre/post-processing must get no GPU")
    report.expect(all(len(o["top5"]) == 5 for o in out), "every image must come out with its top 5")
    with pp.Engine(graph(cpus=cpu_threads)) as engine:
        _, cpu_rate = _rate(engine, raws[: max(8, n // 4)])
    report.line("4 image pipeline", f"model on CPU ({cpu_threads} threads)", f"{cpu_rate:.0f}",
                f"GPU/CPU = {gpu_rate / cpu_rate:.1f}x; decode x2 and top5 on CPU stages")  # fmt: skip


def kill_mid_batch(report: Report, opts: dict[str, Any], on_gpu: bool) -> None:
    with tempfile.TemporaryDirectory() as flags, pp.Engine(SlowBatch(flags, 1.0).options(gpus=0.5), **opts) as engine:
        futures = [engine.submit(i) for i in range(32)]
        victim = _wait_for_flag(Path(flags))
        free_before = _free_gpu_bytes() if on_gpu else 0
        os.kill(victim, signal.SIGKILL)
        outcomes = [_outcome(f) for f in futures]
        freed = (_free_gpu_bytes() - free_before) if on_gpu else 0
        restarts = engine.stats()["SlowBatch"]["restarts"]
    ok = sum(o == "ok" for o in outcomes)
    note = f"killed pid {victim} mid-batch: {ok}/{len(outcomes)} items ok after retry, restarts={restarts}"
    note += f"; device memory freed {freed / GiB:.1f} GiB (it held 4)" if on_gpu else "; GPU memory: n/a (--cpu)"
    report.line("5 SIGKILL", "SlowBatch", "", note)
    report.expect(ok == len(outcomes) and restarts >= 1, "every item should survive the kill")
    report.expect(not on_gpu or freed >= 3 * GiB, "a dead worker's GPU memory should be freed")


def _outcome(future: Any) -> str:
    try:
        future.result(timeout=120)
    except pp.ParapipeError as exc:
        return type(exc).__name__
    return "ok"


def _wait_for_flag(flags: Path) -> int:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        found = list(flags.glob("busy-*"))
        if found:
            return int(found[0].name.split("-")[1])
        time.sleep(0.02)
    raise SystemExit("no batch started within 60 s")


def _free_gpu_bytes() -> int:
    """Free memory of the whole device (every process), as the driver counts it."""
    return int(torch.cuda.mem_get_info()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU here: run the code paths on the CPU (degraded)")
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu
    if not on_gpu and not args.cpu:
        print("no CUDA GPU visible to torch; rerun with --cpu for the degraded run", file=sys.stderr)
        return 2
    if on_gpu:
        torch.zeros(1, device="cuda")  # CUDA initialised in the parent: spawned workers must not mind
        opts: dict[str, Any] = {}
        mode = f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        n, side = 2000, 224
    else:
        opts = {"gpu_devices": {0: "16GiB"}}
        mode = "DEGRADED --cpu run: no GPU, a pretend 16 GiB device 0 is planned, models run on the CPU"
        n, side = 64, 64
    cpu_threads = max(1, min(8, len(os.sched_getaffinity(0)) // 2))
    report, start = Report(), time.monotonic()
    checks = [
        lambda: two_models(report, opts, n // 10),
        lambda: four_replicas(report, opts, n, cpu_threads),
        lambda: batching(report, opts, n, cpu_threads),
        lambda: image_pipeline(report, opts, n // 4, side, cpu_threads),
        lambda: kill_mid_batch(report, opts, on_gpu),
    ]
    for check in checks:
        if time.monotonic() - start > DEADLINE_S:
            report.failures.append("out of time: later checks skipped")
            break
        check()
    report.print(mode)
    print(f"took {time.monotonic() - start:.0f} s")
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
