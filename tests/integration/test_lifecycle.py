"""Start, crash, interrupt and stop: no hang, no zombie, no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import parapipe as pp

from . import _stages as S

TIMEOUT = 60
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script(body: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _worker_pids(proc: subprocess.Popen[str]) -> list[int]:
    line = proc.stdout.readline()
    assert line.startswith("PIDS"), line + proc.stderr.read()
    return [int(p) for p in line.split()[1:]]


_SERVE_FOREVER = """
    import itertools, sys
    import parapipe as pp
    from tests.integration import _stages as S
    if __name__ == "__main__":
        with pp.Engine(pp.Pipeline(S.square, pp.stage(S.add_one, replicas=2))) as engine:
            print("PIDS", *[w["pid"] for w in engine.workers()], flush=True)
            for _ in engine.map(itertools.count()):
                pass
"""


def test_parent_sigkill_leaves_no_worker_alive():
    proc = _script(_SERVE_FOREVER)
    pids = _worker_pids(proc)
    workers = [psutil.Process(p) for p in pids]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT)
    _, alive = psutil.wait_procs(workers, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f"workers outlived their parent: {alive}"


def test_ctrl_c_returns_promptly_and_stops_workers():
    proc = _script(_SERVE_FOREVER)
    pids = _worker_pids(proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(TIMEOUT)
    err = proc.stderr.read()
    assert "KeyboardInterrupt" in err
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    assert not alive


def test_worker_sigkill_is_replaced_and_the_item_retried():
    with pp.Engine(S.Recorder().options(replicas=1)) as engine:
        first = engine.run(0, timeout=TIMEOUT)["pid"]
        os.kill(first, signal.SIGKILL)
        after = engine.run(1, timeout=TIMEOUT)
        assert after["pid"] != first and after["setups"] == 1
        assert engine.stats()["Recorder"]["restarts"] == 1


def test_item_that_kills_its_worker_fails_alone_with_worker_died():
    with pp.Engine(pp.stage(S.kill_self, replicas=2), retries=1) as engine:
        out = list(engine.map(["a", "die", "b", "c"], return_exceptions=True))
        assert engine.run("d", timeout=TIMEOUT) == "d"
    assert out[0] == "a" and out[2:] == ["b", "c"]
    err = out[1]
    assert isinstance(err, pp.WorkerDied)
    assert err.exitcode == -signal.SIGKILL and err.attempts == 2
    assert "SIGKILL" in str(err)


def test_setup_failure_raises_at_start_not_a_hang():
    with pytest.raises(pp.WorkerStartupError, match="model file is missing"), pp.Engine(S.BadSetup()):
        pass


def test_unpicklable_stage_is_a_config_error():
    with pytest.raises(pp.ConfigError, match="module level"):
        pp.Engine(pp.stage(lambda x: x)).start()


def test_close_cancels_pending_when_the_block_raises(tmp_path):
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    with pytest.raises(RuntimeError, match="stop"), pp.Engine(S.spin_or_hold) as engine:
        held = engine.submit(str(fifo))
        queued = engine.submit(0.0)
        writer = open(fifo, "w")  # noqa: SIM115 - returns once the worker holds the item
        held.add_done_callback(lambda _: (writer.write("go\n"), writer.close()))  # let it end, once cancelled
        raise RuntimeError("stop")
    assert held.cancelled() and queued.cancelled()
    assert engine.workers() == [] or all(w["state"] == "dead" for w in engine.workers())


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_other_start_methods(method):
    with pp.Engine(pp.Pipeline(S.square, S.add_one), start_method=method) as engine:
        assert list(engine.map(range(5))) == [1, 2, 5, 10, 17]
