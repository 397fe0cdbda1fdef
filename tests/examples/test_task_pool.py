"""examples/task_pool: tasks as journal rows; a killed run is resumed by running it again, every
worker's log is visible, and ``parapipe jobs`` shows the failed rows."""

from __future__ import annotations

import json
import signal

from parapipe.journal import Journal, State

from .conftest import EXAMPLES, parapipe, python

TASKS = 40


def test_the_task_pool_resumes_after_a_kill_and_shows_every_process_log(tmp_path):
    made = python("task_pool", tmp_path, str(EXAMPLES / "task_pool" / "make_tasks.py"), str(TASKS))
    (tmp_path / "tasks.jsonl").write_text(made.stdout)
    argv = ["-v", "run", "tests.examples._hooks:faulty_mission_graph", "--items", "tasks.jsonl", "--journal",
            "tasks.db", "--out", "done.jsonl", "--start-method", "fork"]  # fmt: skip
    hooks = {"HOOK_DIR": str(tmp_path), "KILL_RUN_ON": "video-0020"}
    assert parapipe("task_pool", tmp_path, *argv, **hooks).returncode == -signal.SIGKILL
    with Journal(tmp_path / "tasks.db") as journal:
        assert journal.counts()[State.DONE] < TASKS - 2

    resumed = parapipe("task_pool", tmp_path, *argv, **hooks)
    assert resumed.returncode == 1, resumed.stderr  # two tasks fail by design
    assert "[faulty_mission#1 pid=" in resumed.stderr and "task video-" in resumed.stderr, "worker logs shown"
    with Journal(tmp_path / "tasks.db") as journal:
        counts = journal.counts()
    assert (counts[State.DONE], counts[State.FAILED]) == (TASKS - 2, 2)
    keys = [json.loads(line)["key"] for line in (tmp_path / "done.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == TASKS

    listed = parapipe("task_pool", tmp_path, "jobs", "tasks.db", "--state", "failed")
    assert "video-0007" in listed.stdout and "video-0027" in listed.stdout
