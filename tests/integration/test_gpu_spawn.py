"""On a real GPU: CUDA initialised in the parent does not break workers (they are spawned, not
forked), and a worker's death gives its GPU memory back. Skipped where torch sees no GPU (CI)."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import pytest

import parapipe as pp

from . import _gpu_stages as G

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MiB = 2**20


def test_cuda_initialised_in_the_parent_does_not_break_workers():
    torch.zeros(1, device="cuda")  # the classic failure: a forked child cannot re-initialise CUDA
    assert torch.cuda.is_initialized()
    with pp.Engine(G.HoldGpu(64).options(gpus=0.5, replicas=2)) as engine:
        outs = list(engine.map(range(8)))
    assert {o["sum"] for o in outs} == {1024.0}
    assert {o["devices"] for o in outs} == {1}, "each replica sees only its own device"


def test_a_killed_worker_frees_its_gpu_memory():
    """The driver releases a dead process's memory once the process is reaped,
    which is the event the test waits for."""
    torch.zeros(1, device="cuda")
    with pp.Engine(G.HoldGpu(2048).options(gpus=1)) as engine:
        victim = engine.run(0, timeout=120)["pid"]
        before = torch.cuda.mem_get_info()[0]
        os.kill(victim, signal.SIGKILL)
        assert engine.run(1, timeout=120)["pid"] != victim
        # the replacement now holds what the victim held: unless the victim's 2 GiB came back,
        # free memory stays 2 GiB (and a context) below where it was
        # the driver frees a process's memory once the process is reaped: wait for that, not time
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.wait_procs([psutil.Process(victim)], timeout=30)
        free = torch.cuda.mem_get_info()[0]
    assert free >= before - 1024 * MiB, "the dead worker's 2 GiB should be free again"
