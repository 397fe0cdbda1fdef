"""Starting and stopping worker processes: the parts that touch the OS, not the routing.

That includes the environment a worker is exec'd with: the variables that cap its native
thread pools to its budget (`thread_env`) and choose its GPUs (`gpu_env`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("parapipe")

_env_lock = threading.Lock()

STOP_GRACE = 5.0
"""Seconds a worker gets to finish after STOP before it is terminated, then killed."""


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set variables only while a child is exec'd: it inherits them before any import runs."""
    with _env_lock:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def stop_process(proc: Any, deadline: float) -> None:
    """Join until the deadline, then terminate, then kill: a stuck worker never blocks close()."""
    proc.join(max(0.0, deadline - time.monotonic()))
    if proc.exitcode is None:
        proc.terminate()
        proc.join(1.0)
    if proc.exitcode is None:
        proc.kill()
        proc.join(1.0)


class Deadlines:
    """Calls ``on_expired(key)`` when a key's deadline passes; one thread, woken by events.

    The thread sleeps on a condition until the earliest deadline, so arming and disarming cost
    a dict write and a notify, and nothing polls.
    """

    def __init__(self, on_expired: Callable[[Any], None], name: str) -> None:
        self._on_expired = on_expired
        self._cond = threading.Condition()
        self._deadlines: dict[Any, float] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"parapipe-deadlines-{name}", daemon=True)
        self._thread.start()

    def arm(self, key: Any, seconds: float) -> None:
        with self._cond:
            self._deadlines[key] = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self, key: Any) -> None:
        with self._cond:
            self._deadlines.pop(key, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(STOP_GRACE)

    def _run(self) -> None:
        while True:
            with self._cond:
                expired = self._wait_for_expiry()
                if expired is None:
                    return
            for key in expired:
                try:
                    self._on_expired(key)
                except Exception:  # one failed expiry must not end every later deadline
                    log.exception("a deadline handler of %s raised", self._thread.name)

    def _wait_for_expiry(self) -> list[Any] | None:
        while not self._closed:
            now = time.monotonic()
            expired = [k for k, d in self._deadlines.items() if d <= now]
            if expired:
                for k in expired:
                    del self._deadlines[k]
                return expired
            nearest = min(self._deadlines.values(), default=None)
            self._cond.wait(None if nearest is None else nearest - now)
        return None


# Native thread pools read these once, when their library loads; hence they must be in the
# worker's environment before any import. Pools a variable cannot reach are capped in the
# worker after setup() (`child._limit_thread_pools`: threadpoolctl, torch, OpenCV).
# Not listed on purpose:
# * Apache Arrow sizes its CPU pool from OMP_NUM_THREADS (listed), its I/O pool is not CPU work.
# * CTranslate2 (faster-whisper) has no env knob: with cpu_threads=0 it follows OMP_NUM_THREADS.
# * onnxruntime takes intra_op_num_threads in its SessionOptions; the stage passes it itself.
# * KMP_BLOCKTIME: only Intel's libiomp reads it (pip torch uses GNU libgomp), and spinning only
#   hurts when workers share cores, which the plans avoid by capping threads to cores.
_THREAD_VARS = (
    "OMP_NUM_THREADS",  # OpenMP (torch, scikit-learn, Arrow's CPU pool, ...)
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMBA_NUM_THREADS",
    "POLARS_MAX_THREADS",
    "RAYON_NUM_THREADS",  # Rust pools, e.g. HuggingFace tokenizers
    "OPENCV_FOR_THREADS_NUM",
    "TF_NUM_INTRAOP_THREADS",
)

# Inter-op parallelism runs whole ops side by side, each with its own intra-op pool: with more
# than one the worker would use a multiple of its budget.
_SINGLE_THREAD_VARS = ("TF_NUM_INTEROP_THREADS",)


def thread_env(threads: int) -> dict[str, str]:
    """Variables that cap every common native thread pool of a worker to ``threads``.

    They only work if set before the libraries load, which is why the parent sets them in the
    environment the worker is exec'd with, before any import runs.
    """
    if threads < 1:
        raise ConfigError(f"a worker needs >= 1 thread, got {threads}")
    env = dict.fromkeys(_THREAD_VARS, str(threads))
    env.update(dict.fromkeys(_SINGLE_THREAD_VARS, "1"))
    return env


def gpu_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` for a worker that was given GPUs; ``{}`` when it was given none.

    A stage that asked for no GPU keeps the environment it inherited rather than having GPUs
    hidden from it: it may not use CUDA at all, and hiding is the user's call, not ours.
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes the ids mean what NVML means by them (CUDA's default
    puts the fastest device first), so the planner's device is the one the worker gets.
    """
    if any(g < 0 for g in gpus):
        raise ConfigError(f"GPU ids must be >= 0, got {gpus}")
    if not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
