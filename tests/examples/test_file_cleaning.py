"""examples/file_cleaning: a worker crash and a kill of the whole run, then the same command again:
every file cleaned, finished files not cleaned again, every kept row written once."""

from __future__ import annotations

import csv
import signal
import sys

import pytest

from parapipe.journal import Journal, State

from .conftest import EXAMPLES, parapipe, python

pytest.importorskip("openpyxl", reason="the examples extra is not installed: pip install -e '.[examples]'")
FILES = 30


def test_cleaning_survives_a_worker_crash_and_a_killed_run_without_redoing_files(tmp_path):
    python("file_cleaning", tmp_path, str(EXAMPLES / "file_cleaning" / "make_files.py"), "data", str(FILES), "40")
    argv = ["run", "tests.examples._hooks:faulty_clean_graph", "data", "--sink", "clean:Combined",
            "--out", "cleaned.csv", "--journal", "clean.db", "--start-method", "fork", "--progress"]  # fmt: skip
    hooks = {"HOOK_DIR": str(tmp_path), "CRASH_WORKER_ON": "chat-0003.csv", "KILL_RUN_ON": "chat-0018.csv"}
    killed = parapipe("file_cleaning", tmp_path, *argv, **hooks)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Journal(tmp_path / "clean.db") as journal:
        done_before = {r.key for r in journal.records(State.DONE, limit=None)}
    ran_before = len((tmp_path / "executions.log").read_text().splitlines())

    resumed = parapipe("file_cleaning", tmp_path, *argv, **hooks)
    assert resumed.returncode == 0, resumed.stderr
    ran_after = (tmp_path / "executions.log").read_text().splitlines()[ran_before:]
    assert not done_before & set(ran_after), "a finished file was cleaned again"

    sys.path.insert(0, str(EXAMPLES / "file_cleaning"))
    try:
        import clean
    finally:
        sys.path.pop(0)
    with open(tmp_path / "cleaned.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").iterdir())
    assert sorted({r["source"] for r in rows}) == expected
    for source in expected:
        mine = [r for r in rows if r["source"] == source]
        assert len(mine) == len(clean.clean.fn(str(tmp_path / source))), f"{source}: rows lost or written twice"
