"""``parapipe run`` and ``pp.run`` through sinks: each key reaches the sink exactly once across a
SIGKILL and a resume, Ctrl-C closes the sink, and the built-in sinks follow the extension."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

import parapipe as pp

from . import _stages as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = [f"k-{i:03d}" for i in range(60)]


def _run_cli(tmp_path, sink: str, out, stop_at: int = 0, stop_with: str = "SIGKILL") -> int:
    items = tmp_path / "items.txt"
    items.write_text("".join(k + "\n" for k in KEYS))
    cmd = [sys.executable, "-m", "parapipe.cli", "run", "tests.integration._stages:signal_graph", "--items",
           str(items), "--sink", f"tests.integration._sinks:{sink}", "--out", str(out), "--journal",
           str(tmp_path / "run.db"), "--start-method", "fork", "--replicas", "2"]  # fmt: skip
    env = {**os.environ, "PARAPIPE_TEST_STOP_AT": str(stop_at), "PARAPIPE_TEST_STOP_WITH": stop_with}
    return subprocess.run(cmd, cwd=ROOT, env=env, timeout=120, capture_output=True).returncode


@pytest.mark.parametrize("sink", ["ExactSink", "ForgetfulSink"])
def test_a_custom_sink_sees_each_key_exactly_once_across_a_kill_and_resume(tmp_path, sink):
    out = tmp_path / "sink.out"
    assert _run_cli(tmp_path, sink, out, stop_at=25) == -signal.SIGKILL
    first = out.read_text().splitlines()
    assert 0 < len(first) < len(KEYS)
    assert _run_cli(tmp_path, sink, out) == 0
    lines = out.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines] if sink == "ExactSink" else lines
    assert sorted(keys) == KEYS, "every key once: none lost, none repeated"


def test_ctrl_c_closes_the_sink_and_the_rerun_finishes_the_rest(tmp_path):
    out = tmp_path / "sink.out"
    assert _run_cli(tmp_path, "ExactSink", out, stop_at=10, stop_with="SIGINT") == 130
    assert (tmp_path / "sink.out.closed").read_text() == "10", "closed after the 10th write"
    assert _run_cli(tmp_path, "ExactSink", out) == 0
    assert sorted(json.loads(line)["key"] for line in out.read_text().splitlines()) == KEYS


def test_pp_run_writes_csv_by_extension_and_resumes_without_rewriting(tmp_path):
    out = tmp_path / "out.csv"
    counts = pp.run(S.fail_on_three, range(6), key=lambda i: f"n{i}", out=out, start_method="fork")
    assert counts == {"results": 5, "errors": 1, "skipped": 0}
    with open(out, newline="") as f:
        rows = {row["key"]: row for row in csv.DictReader(f)}
    assert rows["n2"]["result"] == "2" and "three is not allowed" in rows["n3"]["error"]
    again = pp.run(S.fail_on_three, range(6), key=lambda i: f"n{i}", out=out, start_method="fork")
    assert again == {"results": 0, "errors": 0, "skipped": 6}


def test_pp_run_into_a_sink_object_with_its_ledger_by_the_journal(tmp_path):
    seen: list[str] = []
    db = tmp_path / "run.db"
    for _ in range(2):
        pp.run(S.square, [1, 2, 3], sink=lambda key, outcome: seen.append(f"{key}={outcome}"), journal=db,
               start_method="fork")  # fmt: skip
    assert sorted(seen) == ["0=1", "1=4", "2=9"]
    assert (tmp_path / "run.db.default.keys").exists()
