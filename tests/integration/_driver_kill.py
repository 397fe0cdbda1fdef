"""`parapipe run` SIGKILLed mid-run, then run again: the driver-death test both backends share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kill_then_rerun(tmp_path: Path, graph: str, n: int, *, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``graph`` over keys ``k-000``... with a journal, SIGKILL the driver once the stage
    reached key ``n // 2`` (it says so on a FIFO: no clock), run the same command again, and
    return the output lines. The first run must have written fewer than ``n`` lines."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"k-{i:03d}\n" for i in range(n)))
    out, db, fifo = tmp_path / "out.jsonl", tmp_path / "run.db", tmp_path / "fifo"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "parapipe.cli", "run", graph, "--items", str(items), "--out", str(out),
           "--journal", str(db)]  # fmt: skip
    run_env = {**os.environ, **(env or {}), "PARAPIPE_TEST_FIFO": str(fifo), "PARAPIPE_TEST_SIGNAL_AT": f"k-{n // 2}"}
    run_env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), ROOT, run_env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env)
    with open(fifo) as f:
        assert f.readline() == "reached\n"
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    psutil.wait_procs(workers, timeout=10)
    assert len(out.read_text().splitlines()) < n, "the first run was killed before it finished"

    run_env.pop("PARAPIPE_TEST_FIFO")
    subprocess.run(cmd, cwd=ROOT, env=run_env, check=True, timeout=180)
    return [json.loads(line) for line in out.read_text().splitlines()]
