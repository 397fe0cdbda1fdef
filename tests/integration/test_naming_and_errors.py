"""Stage names resolved by place, and every item failure delivered as an `ItemError`, with workers."""

from __future__ import annotations

import os
import signal
import traceback

import pytest

import parapipe as pp

from . import _stages as S
from . import _stages_naming as N

TIMEOUT = 60


def test_two_unnamed_instances_of_one_class_run_in_their_own_workers():
    x, y = N.Nap("x"), N.Nap("y")
    with pp.Engine(pp.Parallel(x=x, y=y)) as engine:
        out = engine.run(0, timeout=TIMEOUT)
        stats, workers = engine.stats(), engine.workers()
    assert (out["x"]["tag"], out["y"]["tag"]) == ("x", "y")
    assert (out["x"]["stage"], out["y"]["stage"]) == ("x.Nap", "y.Nap")
    assert out["x"]["pid"] != out["y"]["pid"]
    assert set(stats) == {"x.Nap", "y.Nap"} and stats["x.Nap"]["done"] == stats["y.Nap"]["done"] == 1
    assert {w["stage"]: w["pid"] for w in workers} == {"x.Nap": out["x"]["pid"], "y.Nap": out["y"]["pid"]}
    assert x.name is None and y.stage_name == "Nap"


def test_a_function_used_twice_shares_its_workers():
    graph = pp.Pipeline(S.add_one, pp.Parallel(p=S.square, q=S.add_one))
    with pp.Engine(graph) as engine:
        assert engine.run(2, timeout=TIMEOUT) == {"p": 9, "q": 4}
        assert set(engine.stats()) == {"add_one", "square"}
        assert engine.stats()["add_one"]["done"] == 2
        assert sorted(w["stage"] for w in engine.workers()) == ["add_one", "square"]


def test_an_uncaught_stage_error_prints_the_worker_traceback():
    with pp.Engine(N.explode) as engine, pytest.raises(pp.StageError) as info:
        engine.run(7, timeout=TIMEOUT)
    text = "".join(traceback.format_exception(info.value))
    assert "_stages_naming.py" in text and "in explode" in text
    assert "ValueError: cannot take 7" in text


def test_a_stage_that_is_down_is_yielded_by_map_with_return_exceptions(tmp_path):
    with pp.Engine(S.SetupOnce(str(tmp_path / "loaded"))) as engine:
        os.kill(engine.run(0, timeout=TIMEOUT), signal.SIGKILL)
        out = list(engine.map([1, 2, 3], return_exceptions=True))
    assert [type(e) for e in out] == [pp.StageFailed] * 3
    assert [e.index for e in out] == [0, 1, 2]
    assert all(e.to_dict()["type"] == "StageFailed" for e in out)


def test_a_stage_defined_under_the_main_guard_gets_a_message_saying_where_to_define_it(tmp_path):
    """Under spawn the worker imports the script as ``__mp_main__`` without running its
    ``if __name__ == "__main__":`` block, so a function defined there does not exist in the worker."""
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import parapipe as pp\n"
        "if __name__ == '__main__':\n"
        "    def nested(x):\n"
        "        return x + 1\n"
        "    with pp.Engine(nested) as engine:\n"
        "        print(engine.run(1))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "WorkerStartupError" in proc.stderr
    assert "module level" in proc.stderr and "__main__" in proc.stderr
