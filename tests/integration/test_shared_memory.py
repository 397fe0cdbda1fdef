"""Large arrays travel through /dev/shm, arrive intact, and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil

import parapipe as pp
from parapipe.transport import mapping

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


def test_arrays_go_from_stage_to_stage_without_entering_the_parent(monkeypatch):
    mapped: list[str] = []
    real_map = mapping.map_segment
    monkeypatch.setattr(mapping, "map_segment", lambda name, n: mapped.append(name) or real_map(name, n))
    a = _array()
    with pp.Engine(pp.Pipeline(S.scale, S.shift, pp.stage(S.shift, name="shift2"), S.checksum)) as engine:
        total, _, _ = engine.run(a, timeout=TIMEOUT)
        sent = {name: s["shm_bytes_sent"] for name, s in engine.stats().items()}
    assert total == float((a * 2.0 + 2.0)[::4096].sum())
    assert sent == {"scale": a.nbytes, "shift": 0, "shift2": 0, "checksum": 0}
    assert mapped == []  # the parent never mapped an intermediate array (the result is small)
    assert _ours(os.getpid()) == []


def test_one_array_fans_out_to_every_branch_from_one_segment():
    a = _array()
    branches = pp.Parallel(one=S.checksum, two=pp.stage(S.checksum, name="checksum2"), three=S.shift)
    with pp.Engine(pp.Pipeline(S.scale, branches)) as engine:
        out = engine.run(a, timeout=TIMEOUT)
        sent = {name: s["shm_bytes_sent"] for name, s in engine.stats().items()}
    expected = float((a * 2.0)[::4096].sum())
    assert out["one"][0] == out["two"][0] == expected
    assert np.array_equal(out["three"][::1000], a[::1000] * 2.0 + 1.0)
    assert sent == {"scale": a.nbytes, "checksum": 0, "checksum2": 0, "shift": 0}
    del out
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


def test_segments_the_worker_unmapped_are_reused():
    with pp.Engine(S.echo) as engine:
        for i in range(6):
            out = engine.run(np.full(8_000_000, i, np.float32), timeout=TIMEOUT)
            assert out[0] == out[-1] == i
            del out
        arena = engine._pools["echo"]._arena
        assert arena.segments_reused >= 4  # the first store or two allocate; then they recycle
    assert _ours(os.getpid()) == []


def test_segments_a_stage_still_holds_are_never_overwritten():
    with pp.Engine(S.Keeper()) as engine:
        intact = [engine.run(np.full(8_000_000, i, np.float32), timeout=TIMEOUT) for i in range(6)]
    assert intact == [True] * 6
    assert _ours(os.getpid()) == []


def _wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    """A worker's spare appears in /dev/shm with no event to wait on: look until it does."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.02)
    return True


def test_a_killed_workers_spare_segment_is_removed():
    with pp.Engine(S.scale) as engine:
        engine.run(_array(), timeout=TIMEOUT)  # the worker stores a result, then makes a spare
        pid = engine.workers()[0]["pid"]
        assert _wait_for(lambda: any(f"-spare-{pid}-" in n for n in _ours(os.getpid())))
        os.kill(pid, signal.SIGKILL)
        out = engine.run(_array(), timeout=TIMEOUT)  # served by the replacement
        assert engine.stats()["scale"]["restarts"] == 1
        assert not any(f"-spare-{pid}-" in n for n in _ours(os.getpid()))
    assert np.array_equal(out[::1000], _array()[::1000] * 2.0)
    del out
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
