"""The four example systems (``examples/``) against their hand-rolled ``multiprocessing`` versions
(``benchmarks/handrolled/``): wall time on the same data, lines of code, what survives a crash.

    python benchmarks/examples_vs_multiprocessing.py [--scale 1]

Each row runs the command a user would run, in a fresh temporary folder, so the times include
starting the processes (parapipe's workers start with spawn, the default; the hand-rolled ones
fork). The server row times 300 requests once the server answers /readyz (parapipe: over HTTP
through `pp.AsyncClient`; by hand: queues inside one program, no HTTP at all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Figure, machine_line, parse_args, plot_table, print_table

ROOT = Path(__file__).resolve().parents[1]
EX, HAND = ROOT / "examples", ROOT / "benchmarks" / "handrolled"

SURVIVES = {
    "parapipe": "worker crash: item retried; killed run: rerun skips done items, output has each key once",
    "by hand": "nothing: a dead worker hangs or loses its item; a killed run starts over",
}
TASKS_BY_HAND = "killed run: DOING rows rerun by the hand-written query; a dead worker hangs pool.map"


def code_lines(*files: Path) -> int:
    """Non-blank lines that are not comments or docstring-only lines (a rough, fair count)."""
    count, in_doc = 0, False
    for file in files:
        for line in file.read_text().splitlines():
            s = line.strip()
            if in_doc:
                in_doc = not s.endswith('"""')
                continue
            if s.startswith('"""'):
                in_doc = not (len(s) > 3 and s.endswith('"""'))
                continue
            if not s or s.startswith("#"):
                continue
            count += 1
    return count


def sh(args: list[str], cwd: Path, example: str | None = None, ok: tuple[int, ...] = (0,)) -> float:
    """Seconds one command takes; ``ok``: its accepted exit codes (the task pool fails 1 in 20)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EX / example) if example else "", str(ROOT / "src")])}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, timeout=900)
    assert done.returncode in ok, done.stderr.decode()
    return time.perf_counter() - t0


def row(name: str, impl: str, wall: float, files: list[Path], survives: str) -> list[object]:
    return [name, impl, round(wall, 2), code_lines(*files), survives]


def batch_rows(scale: int) -> list[list[object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sh([str(EX / "image_pipeline/make_images.py"), "images", str(24 * scale)], d, "image_pipeline")
        pp_wall = sh(["-m", "parapipe.cli", "run", "faces:graph", "images", "--out", "f.jsonl"], d, "image_pipeline")
        hand = sh([str(HAND / "faces_pool.py"), "images"], d)
        rows += [row("image pipeline", "parapipe", pp_wall, [EX / "image_pipeline/faces.py"], SURVIVES["parapipe"]),
                 row("image pipeline", "Pool(2)", hand, [HAND / "faces_pool.py"], SURVIVES["by hand"])]  # fmt: skip

        sh([str(EX / "file_cleaning/make_files.py"), "data", str(100 * scale)], d, "file_cleaning")
        pp_wall = sh(["-m", "parapipe.cli", "run", "clean:clean", "data", "--sink", "clean:Combined", "--out",
                      "c.csv", "--journal", "c.db"], d, "file_cleaning")  # fmt: skip
        hand = sh([str(HAND / "clean_pool.py"), "data"], d)
        rows += [
            row("file cleaning", "parapipe", pp_wall, [EX / "file_cleaning/clean.py"], SURVIVES["parapipe"]),
            row("file cleaning", "Pool + writer", hand, [HAND / "clean_pool.py"], SURVIVES["by hand"]),
        ]

        (d / "tasks.jsonl").write_text(subprocess.check_output([sys.executable, str(EX / "task_pool/make_tasks.py"),
                                                                str(100 * scale)], text=True))  # fmt: skip
        pp_wall = sh(["-m", "parapipe.cli", "run", "tasks:mission", "--items", "tasks.jsonl", "--journal", "t.db",
                      "--out", "t.jsonl"], d, "task_pool", ok=(1,))  # fmt: skip
        hand = sh([str(HAND / "tasks_pool.py"), "tasks.jsonl"], d)
        rows += [row("task pool", "parapipe", pp_wall, [EX / "task_pool/tasks.py"], SURVIVES["parapipe"]),
                 row("task pool", "Pool + SQL", hand, [HAND / "tasks_pool.py"], TASKS_BY_HAND)]  # fmt: skip
    return rows


def server_rows(count: int) -> list[list[object]]:
    sys.path.insert(0, str(EX / "inference_server"))
    import httpx
    from client import async_jobs

    with tempfile.TemporaryDirectory() as tmp:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EX / "inference_server"), str(ROOT / "src")])}
        proc = subprocess.Popen([sys.executable, "-m", "parapipe.service", "server:graph", "--fd", str(sock.fileno()),
                                 "--journal", f"{tmp}/jobs.db", "--log-level", "warning"], env=env,
                                pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
        try:
            httpx.get(f"{url}/readyz", params={"wait": 60}, timeout=90).raise_for_status()
            t0 = time.perf_counter()
            asyncio.run(async_jobs(url, count))
            pp_wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(60)
        hand = sh([str(HAND / "server_queues.py"), str(count)], Path(tmp))
    survives = "server restart: journaled jobs answered after it; a dead worker: item retried"
    return [
        row("inference server", "parapipe serve", pp_wall, [EX / "inference_server/server.py"], survives),
        row("inference server", "queues, no HTTP", hand, [HAND / "server_queues.py"], SURVIVES["by hand"]),
    ]


FIGURE = Figure("the four example systems against hand-rolled multiprocessing", ("system", "version"),
                 ("wall s", "lines of code"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=1, help="data size multiplier (1: 24 images, 100 files)")
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    rows = batch_rows(args.scale) + server_rows(300 * args.scale)
    headers = ["system", "version", "wall s", "lines of code", "what survives a crash"]
    print_table(headers, rows, title="examples vs hand-rolled multiprocessing", notes=[machine_line()])
    if args.plot:
        plot_table(FIGURE, headers, rows, args.plot)


if __name__ == "__main__":
    main()
