"""An actor whose process Ray restarts while it holds no call: no call fails, so only the
restarted process's own first answer can tell the driver (`RayReplica._restarted`)."""

from __future__ import annotations

import os
import select
import signal
import threading
import time

import pytest

import parapipe as pp

TIMEOUT = 60


class PidOnSetup(pp.Stage):
    """Writes its pid to a FIFO in setup(): the test learns that a (re)started process is ready."""

    def __init__(self, fifo: str) -> None:
        self.fifo = fifo

    def setup(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def process(self, item: int) -> int:
        return os.getpid()


class _Pids:
    """The FIFO's reading end, opened before any writer (and held open by a writer of its own, so
    a closing actor never makes it read as ended)."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def next(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "no process ran setup() in time"
            if select.select([self._fd], [], [], left)[0]:
                self._buffer += os.read(self._fd, 4096)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return int(line)

    def close(self) -> None:
        os.close(self._keep)
        os.close(self._fd)


def _wait_alive(actor_id: str) -> None:
    """Until Ray has the restarted actor as alive again: a call sent then reaches the new
    process and fails nowhere (sent earlier, while Ray restarts it, the call fails and the pool
    sees the death as any other)."""
    from ray._private import state

    deadline = time.monotonic() + TIMEOUT
    while state.actors(actor_id)["State"] != "ALIVE":
        assert time.monotonic() < deadline, "Ray did not report the restarted actor alive in time"
        threading.Event().wait(0.01)


@pytest.mark.parametrize("backend", ["ray"], indirect=True)
@pytest.mark.timeout(120)
def test_an_actor_restarted_while_idle_is_counted_and_its_row_follows(backend, tmp_path):
    pids = _Pids(str(tmp_path / "pids"))
    try:
        with pp.Engine(PidOnSetup(str(tmp_path / "pids")), backend=backend) as engine:
            first = pids.next()
            assert engine.run(0, timeout=TIMEOUT) == first
            os.kill(first, signal.SIGKILL)  # between calls: nothing of parapipe's is in flight
            second = pids.next()  # Ray restarted the process and setup() ran again
            _wait_alive(engine.workers()[0]["actor"])
            assert engine.run(1, timeout=TIMEOUT) == second
            (row,) = engine.workers()
            assert row["pid"] == second, "the row shows the process that now runs the replica"
            (figures,) = engine.stats().values()
            assert figures["restarts"] == 1
    finally:
        pids.close()
