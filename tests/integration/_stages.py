"""Stages used by the integration tests; module level so spawned workers can import them."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np

import parapipe as pp

from ._work import spend


class Recorder(pp.Stage):
    """Reports which process handled an item and how often setup() ran there."""

    def __init__(self, tag: str = "rec") -> None:
        self.tag = tag
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, item: Any) -> dict[str, Any]:
        return {"item": item, "pid": os.getpid(), "setups": self.setups, "tag": self.tag}


class BarrierStage(pp.Stage):
    """Waits on a shared barrier: it only returns if another worker reached it at the same time."""

    def __init__(self, barrier: Any, name: str, only: Any = None) -> None:
        self.barrier = barrier
        self.name = name
        self.only = only

    def process(self, item: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        if self.only is None or item == self.only:
            self.barrier.wait(60)
        return {"item": item, "stage": self.name, "pid": os.getpid(), "start": t0, "end": time.monotonic()}


class Budget(pp.Stage):
    """Reads the budget from inside the worker: affinity, env caps, real BLAS threads."""

    cpus = 1
    replicas = 2

    def setup(self) -> None:
        import numpy  # noqa: F401 - loads OpenBLAS so threadpoolctl can report it

    def process(self, item: Any) -> dict[str, Any]:
        from threadpoolctl import threadpool_info

        ctx = pp.current()
        return {
            "pid": os.getpid(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "openblas": os.environ.get("OPENBLAS_NUM_THREADS"),
            "blas_threads": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
            "ctx": (ctx.stage, ctx.replica, ctx.cpus, ctx.cores),
        }


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def add_one(x: int) -> int:
    return x + 1


def pid_of(_: Any) -> int:
    return os.getpid()


def log_and_return(x: Any) -> Any:
    logging.getLogger("user.stage").warning("handling %s", x)
    return x


def kill_self(x: Any) -> Any:
    if x == "die":
        os.kill(os.getpid(), 9)
    return x


class BadSetup(pp.Stage):
    def setup(self) -> None:
        raise RuntimeError("model file is missing")

    def process(self, item: Any) -> Any:
        return item


def merge_sum(results: dict[str, Any]) -> int:
    return sum(results.values())


def fail_on_x03(x: int) -> int:
    if x % 1000 == 3:
        raise ValueError(f"{x} ends in 003")
    return x


class Hang(pp.Stage):
    """Blocks forever on the item "hang"."""

    timeout = 2.0

    def process(self, item: Any) -> Any:
        if item == "hang":
            import threading

            threading.Event().wait()
        return item


class Flaky(pp.Stage):
    """Raises ConnectionError the first time it sees each item."""

    retry_on = (ConnectionError,)

    def setup(self) -> None:
        self.seen: set[Any] = set()

    def process(self, item: Any) -> Any:
        if item not in self.seen:
            self.seen.add(item)
            raise ConnectionError(f"transient failure on {item}")
        return item


class MemoryHog(pp.Stage):
    max_memory = "400MiB"

    def process(self, item: Any) -> Any:
        if item == "hog":
            block = bytearray(1 << 30)
            for i in range(0, len(block), 4096):
                block[i] = 1
            # Hold it, as a model holding its activations would: touching 1 GiB takes less than
            # the memory watchdog's 50 ms sampling interval, so a freed block could go unseen.
            # The watchdog ends the process long before this wait does.
            threading.Event().wait(60)
            del block
        return item


class Retiring(pp.Stage):
    max_items_per_worker = 3

    def process(self, item: Any) -> int:
        return os.getpid()


class SetupOnce(pp.Stage):
    """setup() works the first time only: every replacement worker fails to start."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self) -> None:
        if os.path.exists(self.marker):
            raise RuntimeError("replacement cannot load the model")
        open(self.marker, "w").close()

    def process(self, item: Any) -> Any:
        return os.getpid()


def tag_done(item: str) -> str:
    """Signals the test through a FIFO when it reaches the item it names, then carries on."""
    fifo = os.environ.get("PARAPIPE_TEST_FIFO")
    if fifo and item == os.environ.get("PARAPIPE_TEST_SIGNAL_AT"):
        with open(fifo, "w") as f:
            f.write("reached\n")
        import threading

        threading.Event().wait()  # hold here until the test kills the parent
    return f"{item}-done"


signal_graph = pp.Pipeline(tag_done)


def times_three(x: int) -> int:
    return 3 * x


class BatchProbe(pp.Stage):
    """Reports, for every item, the size of the batch it was in and when the batch started."""

    batch_size = 8
    batch_wait = 5.0

    def process_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        t0 = time.monotonic()
        if "bad" in items:
            raise ValueError("a bad item spoils the batch")
        if "short" in items:
            return []
        return [{"item": x, "size": len(items), "start": t0} for x in items]


def scale(a: Any) -> Any:
    return a * 2.0


def shift(a: Any) -> Any:
    return a + 1.0


def checksum(a: Any) -> tuple[float, int, int]:
    return float(a[::4096].sum()), a.nbytes, os.getpid()


def shm_kill_or_pass(a: Any) -> Any:
    if os.path.exists(os.environ.get("PARAPIPE_TEST_KILL_MARKER", "/nonexistent")):
        os.remove(os.environ["PARAPIPE_TEST_KILL_MARKER"])
        os.kill(os.getpid(), 9)
    return a + 1.0


def hold_after_signal(a: Any) -> Any:
    """Signals a FIFO once it holds a shared-memory item, then waits to be killed."""
    tag_done(os.environ.get("PARAPIPE_TEST_SIGNAL_AT", ""))
    return a


shm_parent_graph = pp.Pipeline(scale, hold_after_signal)


def blob(n: int) -> bytes:
    """A 300 kB item: bigger than a socket buffer, under the 32 KiB out-of-band threshold."""
    return bytes([n % 256]) * 300_000


NEAR_PIPE_LIMIT = 32 * 1024 - 200
"""Bytes that, pickled in a message, stay just under `protocol.PIPE_MESSAGE_LIMIT`."""


def near_pipe_limit(n: int) -> bytes:
    return bytes([n % 256]) * NEAR_PIPE_LIMIT


def reverse_slowly(b: bytes) -> bytes:
    """Slow enough (3 ms) that the pool sends one item per message, never several packed."""
    spend(0.003)
    return b[::-1]


def pass_blob(b: bytes) -> bytes:
    return b[::-1]


class Keeper(pp.Stage):
    """Keeps every array it is given and checks, on each call, that none has changed: a
    parent that overwrote a segment the worker still maps would show up here."""

    def setup(self) -> None:
        self.kept: list[tuple[Any, float]] = []

    def process(self, a: Any) -> bool:
        self.kept.append((a, float(a[::4096].sum())))
        return all(float(k[::4096].sum()) == total for k, total in self.kept)


def echo(a: Any) -> Any:
    return a


def spin_or_hold(item: float | str) -> int:
    """A number: that many seconds of CPU work. A path: block until the test writes a line to
    that FIFO. Returns the worker's pid."""
    if isinstance(item, str):
        with open(item) as f:
            f.readline()
    else:
        end = time.perf_counter() + item
        while time.perf_counter() < end:
            pass
    return os.getpid()


def unsendable_result(n: int) -> Any:
    """A result that cannot be pickled, small or beside a large array (then it goes through the
    shared-memory path); any other number comes back as it is."""
    if n == 1:
        return threading.Lock()
    if n == 2:
        return {"audio": np.zeros(1_000_000, np.float32), "lock": threading.Lock()}
    return n


class Troubled(pp.Stage):
    """Each way an item can fail, by name: "die" kills the worker, "hang" runs past the
    timeout, "raise" raises; anything else comes back as it is."""

    timeout = 2.0

    def process(self, item: Any) -> Any:
        if item == "die":
            os.kill(os.getpid(), 9)
        if item == "hang":
            threading.Event().wait()
        if item == "raise":
            raise ValueError("asked to raise")
        return item


class OpenCVThreads(pp.Stage):
    """Reports the size of OpenCV's thread pool in a worker whose setup() imported OpenCV."""

    def setup(self) -> None:
        import cv2  # noqa: F401 - the stage's own import, as a real one would do

    def process(self, item: Any) -> int:
        import cv2

        return int(cv2.getNumThreads())


class Niceness(pp.Stage):
    """Reports the nice value of every thread of its worker, one of them started in setup()
    (where a model's thread pools start); spends ``cost`` CPU seconds per item first."""

    def __init__(self, name: str = "niceness", cost: float = 0.0) -> None:
        self.name = name
        self.cost = cost

    def setup(self) -> None:
        self._stop = threading.Event()
        self._pool_thread = threading.Thread(target=self._stop.wait, daemon=True)
        self._pool_thread.start()

    def process(self, item: Any) -> dict[str, Any]:
        spend(self.cost)
        tids = [int(t) for t in os.listdir("/proc/self/task")]
        own = (threading.get_native_id(), self._pool_thread.native_id)  # runs items; started in setup()
        return {"item": item, "pid": os.getpid(), "threads": len(tids),
                "nices": sorted({os.getpriority(os.PRIO_PROCESS, t) for t in tids}),
                "own": sorted({os.getpriority(os.PRIO_PROCESS, t) for t in own if t is not None})}  # fmt: skip

    def teardown(self) -> None:
        self._stop.set()
