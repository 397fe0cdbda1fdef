"""Large arrays travel through /dev/shm, arrive intact, and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import psutil

import parapipe as pp

from . import _stages as S

TIMEOUT = 120
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ours(pid: int | None = None) -> list[str]:
    prefix = "parapipe-" if pid is None else f"parapipe-{pid}-"
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def _array() -> np.ndarray:
    return np.arange(25_000_000, dtype=np.float32)  # 100 MB


def test_100mb_array_through_three_stages_intact_and_no_leftovers():
    a = _array()
    with pp.Engine(pp.Pipeline(S.scale, S.shift, S.checksum)) as engine:
        total, nbytes, _ = engine.run(a, timeout=TIMEOUT)
        small = engine.run(a[:1000], timeout=TIMEOUT)  # below the threshold: the plain pipe
    assert nbytes == a.nbytes
    assert total == float((a * 2.0 + 1.0)[::4096].sum())
    assert small[1] == 4000
    assert _ours(os.getpid()) == []


def test_array_result_comes_back_through_shared_memory_intact():
    a = _array()
    with pp.Engine(S.scale) as engine:
        out = engine.run(a, timeout=TIMEOUT)
    assert out.dtype == np.float32 and out.shape == a.shape
    assert np.array_equal(out[::1000], a[::1000] * 2.0)
    assert _ours(os.getpid()) == []


def test_worker_sigkill_mid_transfer_leaves_no_segment(tmp_path):
    marker = tmp_path / "kill-once"
    marker.touch()
    os.environ["PARAPIPE_TEST_KILL_MARKER"] = str(marker)
    try:
        with pp.Engine(pp.Pipeline(S.scale, S.shm_kill_or_pass, S.checksum)) as engine:
            total, _, _ = engine.run(_array(), timeout=TIMEOUT)
            assert engine.stats()["shm_kill_or_pass"]["restarts"] == 1
    finally:
        del os.environ["PARAPIPE_TEST_KILL_MARKER"]
    assert total == float((_array() * 2.0 + 1.0)[::4096].sum())
    assert _ours(os.getpid()) == []


def test_parent_sigkill_leaves_no_segment(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = textwrap.dedent("""
        import numpy as np, parapipe as pp
        from tests.integration import _stages as S
        if __name__ == "__main__":
            with pp.Engine(S.shm_parent_graph) as engine:
                engine.run(np.arange(25_000_000, dtype=np.float32))
    """)
    env = {**os.environ, "PARAPIPE_TEST_FIFO": str(fifo), "PARAPIPE_TEST_SIGNAL_AT": ""}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    with open(fifo) as f:
        assert f.readline() == "reached\n"
    assert _ours(proc.pid), "the 100 MB item should be in shared memory while it is processed"
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT)
    psutil.wait_procs(workers, timeout=20)
    assert _ours(proc.pid) == []
