from __future__ import annotations

import json
import pickle
import signal

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
