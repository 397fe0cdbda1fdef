"""What the journal costs: a journaled ``map`` of cheap items beside the same map without one.

Three measures, one table:
  * items/s of ``engine.map(range(N))`` with and without ``journal=`` (best of ``--repeat``);
  * bytes written to the journal's files per item: the ``pwrite``/``write`` calls on the
    database and its WAL, counted by ``strace -y`` around one journaled map in a child process
    (the page cache hides rewrites, so ``/proc/self/io`` would undercount);
  * resume: rerunning a journaled map whose ``--resume`` items are all done (every result is
    answered from the journal), and ``Journal.pending()`` over as many queued items.

Usage: python benchmarks/journal.py [--items 20000] [--resume 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import parapipe as pp
from parapipe.journal import Journal, State, Write

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Figure, machine_line, parse_args, print_table


def noop(x: Any) -> Any:
    return x


def _map_rate(n: int, journal: str | None) -> float:
    with pp.Engine(pp.stage(noop, replicas=2)) as engine:
        list(engine.map(range(1000)))  # warm: measures the stage's cost, so map chunks
        t0 = time.perf_counter()
        out = list(engine.map(range(n), journal=journal, key=str))
        wall = time.perf_counter() - t0
    assert out == list(range(n))
    return n / wall


def _child(db: str, n: int) -> None:
    with pp.Engine(pp.stage(noop, replicas=2)) as engine:
        list(engine.map(range(1000)))
        list(engine.map(range(n), journal=db, key=str))


def _bytes_per_item(workdir: str, n: int) -> float | None:
    if shutil.which("strace") is None:
        return None
    db = os.path.join(workdir, "strace.db")
    trace = os.path.join(workdir, "trace.txt")
    cmd = ["strace", "-f", "-y", "-e", "trace=pwrite64,write", "-o", trace,
           sys.executable, __file__, "--child", db, str(n)]  # fmt: skip
    subprocess.run(cmd, check=True)
    total = 0
    pattern = re.compile(r"(?:pwrite64|write)\(\d+<([^>]*)>.*\)\s+=\s+(\d+)")
    with open(trace) as f:
        for line in f:
            found = pattern.search(line)
            if found and found.group(1).startswith(db):
                total += int(found.group(2))
    return total / n


def _resume_seconds(workdir: str, n: int) -> tuple[float, float]:
    db = os.path.join(workdir, "resume.db")
    keys = [str(i) for i in range(n)]
    with Journal(db, run="default", max_result_bytes=None) as journal:
        journal.add(keys)
        for start in range(0, n, 10_000):
            batch = keys[start : start + 10_000]
            journal.apply([Write(k, State.RUNNING) for k in batch])
            journal.apply([Write(k, State.DONE, int(k)) for k in batch])
    with pp.Engine(pp.stage(noop, replicas=1)) as engine:
        t0 = time.perf_counter()
        out = list(engine.map(range(n), journal=db, key=str))
        rerun = time.perf_counter() - t0
    assert out == list(range(n))
    queued = os.path.join(workdir, "pending.db")
    with Journal(queued) as journal:
        journal.add(keys)
        t0 = time.perf_counter()
        assert len(journal.pending()) == n
        pending = time.perf_counter() - t0
    return rerun, pending


FIGURE = Figure("a journaled map before and after the journal rework (issue 20)", ("measure",), ("before", "after"),
                 log=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--resume", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    if args.plot:
        raise SystemExit("the figure compares two runs (before, after): write them in the page, then --plot-from it")
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as workdir:
        plain = max(_map_rate(args.items, None) for _ in range(args.repeat))
        journaled = []
        for i in range(args.repeat):
            journaled.append(_map_rate(args.items, os.path.join(workdir, f"rate{i}.db")))
        best = max(journaled)
        per_item = _bytes_per_item(workdir, args.items)
        rerun, pending = _resume_seconds(workdir, args.resume)
    written = f"{per_item:.0f}" if per_item is not None else "n/a (no strace)"
    print_table(
        ["measure", "value"],
        [
            [f"map without journal, items/s ({args.items} items)", f"{plain:.0f}"],
            [f"map with journal, items/s ({args.items} items)", f"{best:.0f}"],
            ["journal / plain", f"{best / plain:.3f}x"],
            ["bytes written to the journal per item", written],
            [f"resume: rerun of {args.resume} done items, s", f"{rerun:.2f}"],
            [f"Journal.pending() of {args.resume} queued items, s", f"{pending:.2f}"],
        ],
        title="Journal cost",
        notes=[machine_line()],
    )


if __name__ == "__main__":
    main()
