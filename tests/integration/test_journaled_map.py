"""A journaled map: what a rerun answers from the journal, what it runs again, and what the
journal holds when the consumer sees a result or presses Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import parapipe as pp
from parapipe.journal import Journal, State

from . import _journal_stages as J
from . import _stages as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_results_over_a_mib_are_answered_from_the_journal_on_resume(tmp_path):
    db = tmp_path / "run.db"
    with pp.Engine(J.big) as engine:
        first = list(engine.map(range(3), journal=db))
    with pp.Engine(J.big) as engine:
        second = list(engine.map(range(3), journal=db))
        assert engine.stats()["big"]["done"] == 0, "done work must not run again"
    assert first == second == [J.big(i) for i in range(3)]


def test_a_done_item_whose_result_was_not_kept_is_computed_again_not_refused(tmp_path):
    db = tmp_path / "run.db"
    for _ in range(2):
        with pp.Engine(J.big) as engine, Journal(db, max_result_bytes=1000) as journal:
            assert list(engine.map(range(2), journal=journal)) == [J.big(0), J.big(1)]
    with Journal(db) as journal:
        assert [r.attempts for r in journal.records()] == [1, 1]  # done stays final: no new attempt


def test_a_poison_item_stays_failed_on_resume_until_retry_failed(tmp_path):
    db = tmp_path / "run.db"
    items, keys = ["a", "die", "b"], ["a", "poison", "b"]
    with pp.Engine(S.kill_self, retries=1) as engine:
        first = list(engine.map(items, journal=db, key=keys, return_exceptions=True))
    assert isinstance(first[1], pp.WorkerDied)

    with pp.Engine(S.kill_self, retries=1) as engine:
        second = list(engine.map(items, journal=db, key=keys, return_exceptions=True))
        assert engine.stats()["kill_self"]["restarts"] == 0, "the poison item must not run again"
    assert isinstance(second[1], pp.WorkerDied) and second[1].index == 1
    assert second[0::2] == ["a", "b"]

    with pp.Engine(S.kill_self, retries=1) as engine:
        third = list(engine.map(items, journal=db, key=keys, return_exceptions=True, retry_failed=True))
        assert engine.stats()["kill_self"]["restarts"] == 2
    assert isinstance(third[1], pp.WorkerDied)
    with Journal(db) as journal:
        poison = journal.get("poison")
        assert poison is not None and (poison.state, poison.retryable, poison.attempts) == (State.FAILED, True, 4)


def test_a_result_the_consumer_sees_is_already_in_the_journal(tmp_path):
    db = tmp_path / "run.db"
    with pp.Engine(pp.stage(S.square, replicas=2)) as engine, Journal(db) as reader:
        for i, result in enumerate(engine.map(range(300), journal=db, key=str)):
            record = reader.get(str(i))
            assert record is not None and (record.state, record.result) == (State.DONE, result)


def test_namespace_separates_maps_and_run_is_a_deprecated_alias(tmp_path):
    db = tmp_path / "run.db"
    with pp.Engine(S.square) as engine:
        assert list(engine.map(range(3), journal=db, namespace="squares")) == [0, 1, 4]
        with pytest.warns(DeprecationWarning, match="namespace"):
            assert list(engine.map(range(2), journal=db, run="old")) == [0, 1]
    with Journal(db, run="squares") as squares, Journal(db, run="old") as old:
        assert squares.counts()[State.DONE] == 3 and old.counts()[State.DONE] == 2


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_during_a_journaled_map_is_quiet_and_the_journal_resumes(tmp_path):
    db, n = str(tmp_path / "run.db"), 400
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._journal_stages", db, str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "running\n"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "exception calling callback" not in stderr and "JournalError" not in stderr, stderr

    with Journal(db) as journal:
        records = journal.records(limit=None)
        done = [r for r in records if r.state is State.DONE]
        assert len(done) >= 21 and all(r.result == int(r.key) ** 2 for r in done)
        assert all(journal.attempt_log(r.key)[-1]["state"] == "done" for r in done)
    with pp.Engine(pp.stage(J.slow_square, replicas=2)) as engine:
        assert list(engine.map(range(n), journal=db, key=str)) == [i * i for i in range(n)]
        assert engine.stats()["slow_square"]["done"] <= n - len(done), "done items ran again"
