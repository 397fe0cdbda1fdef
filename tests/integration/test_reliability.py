"""Supervision: timeouts, retry_on, memory limits, recycling, and a stage that cannot restart."""

from __future__ import annotations

import logging
import os
import signal

import pytest

import parapipe as pp

from . import _stages as S

TIMEOUT = 60


def test_hanging_item_hits_timeout_and_the_rest_are_served():
    with pp.Engine(S.Hang()) as engine:
        out = list(engine.map(["a", "hang", "b"], return_exceptions=True))
        assert engine.run("c", timeout=TIMEOUT) == "c"
        restarts = engine.stats()["Hang"]["restarts"]
    assert out[0] == "a" and out[2] == "b"
    assert isinstance(out[1], pp.TaskTimeout) and out[1].timeout == 2.0 and out[1].index == 1
    assert restarts == 1


def test_a_kill_parapipe_did_itself_is_logged_as_such(caplog):
    with caplog.at_level(logging.WARNING, logger="parapipe"), pp.Engine(S.Hang()) as engine:
        with pytest.raises(pp.TaskTimeout):
            engine.run("hang", timeout=TIMEOUT)
        assert engine.run("a", timeout=TIMEOUT) == "a"  # the replacement is up: the exit was logged
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "parapipe")
    assert "parapipe killed it: an item ran past the stage's timeout of 2.0 s" in text
    assert "OOM" not in text and "from outside" not in text


def test_passing_max_memory_is_logged_as_such(caplog):
    with caplog.at_level(logging.WARNING, logger="parapipe"), pp.Engine(S.MemoryHog()) as engine:
        with pytest.raises(pp.WorkerDied):
            engine.run("hog", timeout=TIMEOUT)
        assert engine.run("a", timeout=TIMEOUT) == "a"
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "parapipe")
    assert "passed max_memory (0.39 GiB)" in text and "exited with code" not in text


def test_retry_on_retries_listed_user_exceptions():
    with pp.Engine(S.Flaky()) as engine:
        assert list(engine.map(["x", "y"])) == ["x", "y"]
    with pp.Engine(S.Flaky().options(retries=0)) as engine, pytest.raises(pp.StageError, match="ConnectionError"):
        engine.run("x", timeout=TIMEOUT)


def test_user_exceptions_are_not_retried_by_default():
    with pp.Engine(S.fail_on_three) as engine:
        with pytest.raises(pp.StageError):
            engine.run(3, timeout=TIMEOUT)
        assert engine.stats()["fail_on_three"]["failed"] == 1


def test_memory_hog_is_killed_with_a_precise_error():
    with pp.Engine(S.MemoryHog()) as engine:
        out = list(engine.map(["a", "hog", "b"], return_exceptions=True))
    assert out[0] == "a" and out[2] == "b"
    err = out[1]
    assert isinstance(err, pp.WorkerDied) and "max_memory" in str(err) and err.attempts == 1


def test_max_items_per_worker_recycles_without_failing_items():
    with pp.Engine(S.Retiring()) as engine:
        pids = [engine.run(i, timeout=TIMEOUT) for i in range(9)]
        assert engine.stats()["Retiring"]["failed"] == 0
    assert len(set(pids)) == 3
    assert all(pids.count(p) == 3 for p in set(pids))


def test_stage_whose_replacements_cannot_start_fails_clearly(tmp_path):
    with pp.Engine(S.SetupOnce(str(tmp_path / "loaded"))) as engine:
        pid = engine.run(0, timeout=TIMEOUT)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(pp.StageFailed, match="failed to start"):
            engine.run(1, timeout=TIMEOUT)
        with pytest.raises(pp.StageFailed):
            engine.run(2, timeout=TIMEOUT)
