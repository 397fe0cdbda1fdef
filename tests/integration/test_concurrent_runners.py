"""Several ``parapipe run`` processes on one journal, and ``parapipe run --follow``.

Side effects are counted, not only results: the stage appends each item to a file as its last
act (`_claim_stages`), so an item executed to completion twice shows up twice there.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from parapipe.cli import main
from parapipe.journal import State, open_journal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRAPH = "tests.integration._claim_stages:graph"
WAIT = 120


def _journal(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> str:
    return str(tmp_path / "run.db") if backend == "sqlite" else str(request.getfixturevalue("postgres_url"))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PARAPIPE_TEST_SIDE": str(tmp_path / "side.txt"), **extra}


def _run(journal: str, items: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "parapipe.cli", "run", GRAPH, "--items", str(items), "--out", str(out),
            "--journal", journal, "--start-method", "forkserver", *flags]  # fmt: skip


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("backend", "runners"), [("sqlite", 2), ("postgres", 3)])
def test_runners_sharing_a_journal_execute_each_item_once_through_worker_and_runner_kills(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, runners: int
) -> None:
    journal = _journal(tmp_path, backend, request)
    keys = [f"item-{i:03d}" for i in range(500)]
    items = tmp_path / "items.txt"
    items.write_text("".join(k + "\n" for k in keys))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    worker_kills = random.Random(15).sample(keys, 20)
    env = _env(tmp_path, PARAPIPE_TEST_KILL_WORKER=",".join(worker_kills),
               PARAPIPE_TEST_KILL_RUNNER="item-150", PARAPIPE_TEST_FIFO=str(fifo))  # fmt: skip
    outs = [tmp_path / f"out{n}.jsonl" for n in range(runners)]
    # One worker per runner: when item-150 blocks, its runner has nothing else in flight that
    # could finish its side effect and die with its outcome unrecorded (which would, rightly,
    # run again: a side effect is exactly once only up to the commit of its outcome).
    procs = [
        subprocess.Popen(
            _run(journal, items, out, "--replicas", "1"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    with open(fifo) as f:  # item-150 is in flight: its runner is killed with it
        word, pid = f.readline().split()
    assert word == "reached"
    victim = next(p for p in procs if p.pid == int(pid))
    workers = psutil.Process(victim.pid).children(recursive=True)
    victim.kill()
    victim.wait(WAIT)
    psutil.wait_procs(workers, timeout=10)

    survivors = [p for p in procs if p is not victim]
    for proc in survivors:
        _, stderr = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr and "JournalError" not in stderr, stderr

    executed = Counter(_lines(tmp_path / "side.txt"))
    assert sorted(executed) == keys and set(executed.values()) == {1}, executed.most_common(3)
    for proc, out in zip(procs, outs, strict=True):
        if proc is not victim:  # each survivor's output has every item, once, with its result
            rows = [json.loads(line) for line in _lines(out)]
            assert sorted(r["key"] for r in rows) == keys
            assert all(r["result"] == r["key"].upper() for r in rows)
    with open_journal(journal) as store:
        assert store.counts()[State.DONE] == 500
        assert store.get("item-150").attempts == 2
        assert [e["state"] for e in store.attempt_log("item-150")] == ["interrupted", "done"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_follow_runs_items_added_while_it_runs_and_ctrl_c_stops_it_cleanly(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = _journal(tmp_path, backend, request)
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(_run(journal, items, out, "--follow"), cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting for new items (3 results, 0 errors)\n"
        assert main(["jobs", "add", journal, "d", "e"]) == 0
        assert "queued 2 items" in capsys.readouterr().out
        assert proc.stdout.readline() == "waiting for new items (5 results, 0 errors)\n"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "stopped: 5 results" in stdout
    assert sorted(json.loads(line)["key"] for line in _lines(out)) == ["a", "b", "c", "d", "e"]
    assert sorted(_lines(tmp_path / "side.txt")) == ["a", "b", "c", "d", "e"]
