"""The worker process: apply the CPU budget, build the stage, serve tasks until told to stop.

Order matters. The thread-cap environment is already in place when the process is exec'd (the
parent sets it), the affinity is applied to every thread that exists (the parent's ``__main__``
may have imported numpy, whose OpenBLAS pool started before us), and only then is the user's
stage unpickled and ``setup()`` run, so every library it loads sees the budget.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from .. import context, transport
from ..priority import lower_priority
from ..stagewire import load_stage
from . import protocol
from .execute import Errors, run_batch, run_one
from .gpucap import cap_memory
from .malloc import keep_freed_memory


@dataclass(frozen=True)
class WorkerBoot:
    """Everything a worker needs before it can unpickle the user's stage."""

    stage: str
    replica: int
    threads: int
    cores: tuple[int, ...]
    stage_bytes: bytes
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()
    gpu_fraction: float | None = None
    log_level: int = logging.WARNING
    max_memory: int | None = None
    max_items: int | None = None
    spin: float = 0.0
    """Seconds to poll the pipe after each answer before blocking (`config.spin_seconds`)."""
    python: str | None = None
    """The stage's own interpreter (``python=``), named in errors; None on the parent's."""
    nice: int = 0
    """CPU priority (`parapipe.priority`), set before the stage loads so its threads inherit it."""


def main(conn: Connection, boot: WorkerBoot) -> None:
    """Entry point of every worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    keep_freed_memory()  # before the stage loads: its model's calls reuse the memory they free
    _watch_parent()
    send = _Sender(conn)
    _install_log_forwarding(send, boot)
    try:
        stage, runner = build(boot)
    except BaseException as exc:
        send(protocol.dumps((protocol.FAILED, protocol.ExcInfo.capture(exc))))
        return
    send(protocol.dumps((protocol.READY, describe(boot))))
    if boot.max_memory is not None:
        _watch_memory(boot.max_memory)
    retired = _serve(conn, send, stage, boot, runner)
    if runner is not None:
        runner.complete(stage.teardown())
        runner.close()
    else:
        stage.teardown()
    if retired:
        sys.exit(protocol.RECYCLE_EXIT)


def build(boot: WorkerBoot) -> tuple[Any, Any]:
    """The stage, set up, and the `concurrent.Runner` that serves it when it runs several items
    at once or is ``async`` (None for the plain serial loop, which imports no asyncio). A worker
    process and a Ray actor (`parapipe.ray.actor`) both start here."""
    os.environ.update(boot.env)  # again, for fork/forkserver where exec-time env did not apply
    pin_all_threads(boot.cores)
    if boot.nice:
        lower_priority(boot.nice)
    context._set_current(
        context.WorkerContext(
            boot.stage, boot.replica, boot.threads, boot.cores, boot.gpus, gpu_fraction=boot.gpu_fraction
        )
    )
    _limit_thread_pools(boot.threads)
    stage = _load(boot)
    cap_memory(boot.gpu_fraction)  # the stage's module may have imported torch: cap before setup() allocates
    runner = None
    if stage.concurrency > 1 or stage.is_async:
        from .concurrent import Runner

        runner = Runner(stage)
        runner.complete(stage.setup())
    else:
        stage.setup()
    cap_memory(boot.gpu_fraction)
    _limit_thread_pools(boot.threads)  # libraries loaded by setup() start with their own pools
    return stage, runner


def _load(boot: WorkerBoot) -> Any:
    """The stage; on another interpreter, an import error says which one lacks which module."""
    if boot.python is not None:
        from . import compat

        compat.install()
    try:
        return load_stage(boot.stage_bytes)
    except (ImportError, AttributeError, pickle.UnpicklingError) as exc:
        if boot.python is None:
            raise
        module = getattr(exc, "name", None) or "the stage's module"
        raise ImportError(
            f"the stage cannot be loaded on its interpreter {boot.python}: it cannot import {module!r} "
            f"({type(exc).__name__}: {exc}). Install the stage's libraries in that environment, and define the "
            "stage in a module on a path this process has (not in the main script, which a worker there does "
            "not run)"
        ) from exc


def _serve(conn: Connection, send: _Sender, stage: Any, boot: WorkerBoot, runner: Any = None) -> bool:
    """Serve tasks until STOP (returns False) or until this worker should retire (True).

    Large arrays in tasks and results travel through shared memory (`parapipe.transport`);
    segments this worker creates are named for the parent, which releases them.
    """
    parent = multiprocessing.parent_process()
    arena = transport.SegmentArena(owner_pid=parent.pid if parent is not None else None, spare=True)
    transport.track_unmapped()
    try:
        if runner is not None:
            encode = functools.partial(transport.encode, arena=arena, threshold=protocol.PIPE_MESSAGE_LIMIT)
            pack = functools.partial(transport.pack, arena=arena, threshold=protocol.PIPE_MESSAGE_LIMIT)
            retire = functools.partial(should_retire, boot)
            return bool(runner.serve(conn, send, retire, encode, pack))
        return _serve_with(conn, send, stage, boot, arena)
    finally:
        arena.close()


def _serve_with(conn: Connection, send: _Sender, stage: Any, boot: WorkerBoot, arena: transport.SegmentArena) -> bool:
    encode = functools.partial(transport.encode, arena=arena, threshold=protocol.PIPE_MESSAGE_LIMIT)
    pack = functools.partial(transport.pack, arena=arena, threshold=protocol.PIPE_MESSAGE_LIMIT)
    retry_on: Errors = tuple(stage.retry_on)
    served = 0
    spin = _spinner(conn, boot.spin)
    while True:
        spin()
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return False
        try:
            msg = transport.decode(data)
        except Exception as exc:  # the parent fails the message's items; this worker carries on
            send(protocol.dumps((protocol.UNREADABLE, protocol.ExcInfo.capture(exc))))
            continue
        if msg[0] == protocol.STOP:
            return False
        if msg[0] == protocol.BATCH:
            results = run_batch(stage, msg[1], retry_on, pack)
        else:
            results = [run_one(stage, tid, item, retry_on, pack) for tid, item in msg[1]]
        del msg  # its arrays unmap now, unless the stage kept them: the parent may reuse those
        send(protocol.dump_results(results, encode, transport.drain_unmapped(), stage.stage_name))
        served += len(results)
        if should_retire(boot, served):
            return True


def _spinner(conn: Connection, seconds: float) -> Callable[[], None]:
    """Poll the pipe for up to ``seconds`` before ``recv_bytes`` blocks, so that a caller who
    sends again right after its answer does not pay for waking a sleeping process.

    It does not yield the core between polls: a caller's next message comes ~40 µs after the
    answer, and a yield in that window cost the round trip ~10 µs (measured). The spin is
    short instead (`config.DEFAULT_SPIN_US`), so a parent busy with a `map`'s results on a
    small machine loses little to the workers' last spin."""
    if seconds <= 0:
        return lambda: None
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    poll, clock = poller.poll, time.perf_counter

    def spin() -> None:
        deadline = clock() + seconds
        while not poll(0) and clock() < deadline:
            pass

    return spin


def should_retire(boot: WorkerBoot, served: int) -> bool:
    """Retire between items when near the memory limit, so the next item does not cross it."""
    if boot.max_items is not None and served >= boot.max_items:
        return True
    return boot.max_memory is not None and rss_bytes() > _RETIRE_AT * boot.max_memory


def rss_bytes() -> int:
    """Resident memory of this process, cheaply (one small /proc read)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MEMORY_SAMPLE_SECONDS = 0.05
_RETIRE_AT = 0.9


def _watch_memory(limit: int) -> None:
    """Memory can only be sampled: check RSS 20 times a second and die at once when over."""

    def watch() -> None:
        idle = threading.Event()
        while not idle.wait(_MEMORY_SAMPLE_SECONDS):
            if rss_bytes() > limit:
                os._exit(protocol.MEMORY_EXIT)

    threading.Thread(target=watch, name="parapipe-memory-watch", daemon=True).start()


class _Sender:
    """Serialises sends: results (main thread) and log records (any thread) share one pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self._conn.send_bytes(data)


def _watch_parent() -> None:
    """Exit at once when the parent dies, even by SIGKILL, even while a task is running."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    parent_pid = parent.pid

    def watch() -> None:
        wait([parent.sentinel])
        transport.sweep(parent_pid)  # the engine cannot clean up after itself any more
        os._exit(1)

    threading.Thread(target=watch, name="parapipe-parent-watch", daemon=True).start()


def pin_all_threads(cores: tuple[int, ...], pid: int | str = "self") -> None:
    """sched_setaffinity(pid) pins only one thread; pin every thread the process has."""
    if not cores:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            continue


def _limit_thread_pools(threads: int) -> None:
    """Cap pools that read no variable, or that a library sized before our variables applied
    (fork, forkserver): BLAS and OpenMP through threadpoolctl, torch and OpenCV by their own call."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)
    cv2 = sys.modules.get("cv2")  # only if the stage uses it: importing OpenCV costs ~100 ms
    if cv2 is not None and hasattr(cv2, "setNumThreads"):
        cv2.setNumThreads(threads)


def describe(boot: WorkerBoot) -> dict[str, Any]:
    from threadpoolctl import threadpool_info

    return {
        "pid": os.getpid(),
        "cores": tuple(sorted(os.sched_getaffinity(0))),
        "threads": boot.threads,
        "python": sys.executable,
        "protocol": protocol.VERSION,
        "pools": [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()],
    }


class _ForwardHandler(logging.Handler):
    """Sends log records to the parent, tagged with stage, replica and pid."""

    def __init__(self, send: _Sender, boot: WorkerBoot) -> None:
        super().__init__()
        self._send = send
        self._tag = f"[{boot.stage}#{boot.replica} pid={os.getpid()}] "
        self._extra = {"stage": boot.stage, "replica": boot.replica}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            data = {
                **record.__dict__,
                **self._extra,
                "msg": self._tag + record.getMessage(),
                "args": None,
                "exc_info": None,
            }
            self._send(protocol.dumps((protocol.LOG, data)))
        except (OSError, ValueError, pickle.PicklingError, TypeError):
            self.handleError(record)


def _install_log_forwarding(send: _Sender, boot: WorkerBoot) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ForwardHandler(send, boot)]
    root.setLevel(boot.log_level)
