from __future__ import annotations

import json
import pickle
import signal
import traceback

import pytest

import parapipe as pp

ERRORS = [
    pp.StageError("asr", "bad audio", exc_type="ValueError", traceback="Traceback...", index=4, key="a.wav"),
    pp.WorkerDied("asr", exitcode=-signal.SIGKILL, attempts=3, index=1, key="k"),
    pp.TaskTimeout("asr", timeout=2.5, attempts=1, index=0),
    pp.ItemError("merge", "boom", index=2),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_item_errors_roundtrip_through_json_and_pickle(err):
    data = json.loads(json.dumps(err.to_dict()))
    assert type(pp.ItemError.from_dict(data)) is type(err)
    assert pp.ItemError.from_dict(data).to_dict() == err.to_dict()
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err) and str(clone) == str(err)


def test_messages_name_stage_item_and_cause():
    assert str(ERRORS[0]) == "stage 'asr', item 4 (key 'a.wav'): ValueError: bad audio"
    died = str(ERRORS[1])
    assert "SIGKILL" in died and "OOM" in died
    assert "2.5 s" in str(ERRORS[2])


def test_exit_descriptions():
    assert "exited with code 3" in pp.WorkerDied("s", exitcode=3).message
    assert "SIGSEGV" in pp.WorkerDied("s", exitcode=-signal.SIGSEGV).message
    assert "unknown" in pp.WorkerDied("s").message


def test_stage_down_and_lost_results_are_item_errors_with_a_round_trip():
    failed = pp.StageFailed("asr", "setup keeps crashing")
    assert isinstance(failed, pp.ItemError) and isinstance(failed, RuntimeError)
    assert str(failed) == "stage 'asr' failed: setup keeps crashing"
    failed.index, failed.key = 3, "a.wav"
    assert str(failed) == "stage 'asr' failed: setup keeps crashing (item 3, key 'a.wav')"
    lost = pp.ResultLost(message="segment pp-1 is gone", index=5)
    assert isinstance(lost, pp.ItemError) and lost.stage == "<transport>"
    assert "item 5: its result was lost in transport: segment pp-1 is gone" in str(lost)
    for err in (failed, lost):
        back = pp.ItemError.from_dict(json.loads(json.dumps(err.to_dict())))
        assert type(back) is type(err) and back.to_dict() == err.to_dict() and str(back) == str(err)
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err) and str(clone) == str(err)


def test_batch_size_mismatch_lives_with_the_other_errors():
    from parapipe import batching, errors

    assert batching.BatchSizeMismatch is errors.BatchSizeMismatch
    assert issubclass(errors.BatchSizeMismatch, pp.ParapipeError)


def _remote_text(err):
    return "".join(traceback.format_exception(err))


@pytest.mark.parametrize(
    "rebuild",
    [lambda e: e, lambda e: pickle.loads(pickle.dumps(e)), lambda e: pp.ItemError.from_dict(e.to_dict())],
    ids=["made", "pickled", "from_dict"],
)
def test_stage_error_prints_the_worker_traceback_as_its_cause(rebuild):
    remote = 'Traceback (most recent call last):\n  File "model.py", line 7, in process\nValueError: bad\n'
    err = rebuild(pp.StageError("asr", "bad", exc_type="ValueError", traceback=remote, index=1))
    text = _remote_text(err)
    assert 'File "model.py", line 7, in process' in text
    assert text.index("in process") < text.index("stage 'asr', item 1: ValueError: bad")
    assert "direct cause" in text
    assert pp.StageError("asr", "bad").__cause__ is None
