"""The stage of the concurrent-runner tests; module level so spawned workers can import it.

``work(item)`` appends ``item`` to ``$PARAPIPE_TEST_SIDE`` (one ``O_APPEND`` write: a side
effect that counts completed executions, which results alone cannot show) and returns it in
upper case. Two faults, each once per item, claimed with an ``O_EXCL`` marker file so that a
retry goes through:

* items listed in ``$PARAPIPE_TEST_KILL_WORKER`` SIGKILL their own worker before the side effect;
* the item ``$PARAPIPE_TEST_KILL_RUNNER`` writes ``reached RUNNER_PID`` to ``$PARAPIPE_TEST_FIFO``
  and then waits (so its runner can be SIGKILLed with it in flight), never finishing there.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import parapipe as pp

from ._work import spend


def _first_time(item: str, what: str) -> bool:
    marker = os.path.join(os.path.dirname(os.environ["PARAPIPE_TEST_SIDE"]), f"{what}-{item}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def work(item: str) -> str:
    spend(0.003)  # the work itself: slow enough that map sends items one at a time
    if item in os.environ.get("PARAPIPE_TEST_KILL_WORKER", "").split(",") and _first_time(item, "killed"):
        os.kill(os.getpid(), signal.SIGKILL)
    if item == os.environ.get("PARAPIPE_TEST_KILL_RUNNER") and _first_time(item, "runner"):
        with open(os.environ["PARAPIPE_TEST_FIFO"], "w") as fifo:
            runner = multiprocessing.parent_process()
            fifo.write(f"reached {runner.pid if runner is not None else os.getppid()}\n")
        threading.Event().wait()  # until the test SIGKILLs this runner
    fd = os.open(os.environ["PARAPIPE_TEST_SIDE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{item}\n".encode())
    finally:
        os.close(fd)
    return item.upper()


graph = pp.stage(work, replicas=2, retries=3)
