"""Faults injected into the examples' stages, each once (a marker file remembers it happened):
a worker that dies on one file, and a kill of the whole run (parent and workers) on another."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

import parapipe as pp


def _once(name: str) -> bool:
    marker = Path(os.environ["HOOK_DIR"]) / f"{name}.happened"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def kill_the_run() -> None:
    """SIGKILL the runner and every worker (they run in their own process groups), this one last."""
    runner = psutil.Process(os.getppid())
    for proc in [runner, *runner.children(recursive=True)]:
        if proc.pid != os.getpid():
            proc.send_signal(signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def faulty_clean(path: str) -> list[dict[str, str]]:
    import clean  # the example, from its folder

    with open(Path(os.environ["HOOK_DIR"]) / "executions.log", "a") as log:
        log.write(path + "\n")
    name = Path(path).name
    if name == os.environ.get("CRASH_WORKER_ON") and _once("crash"):
        os._exit(1)  # a segfaulting reader, say: the worker is replaced and the file retried
    if name == os.environ.get("KILL_RUN_ON") and _once("kill"):
        kill_the_run()
    return clean.clean(path)


faulty_clean_graph = pp.stage(faulty_clean, replicas=2)


def faulty_mission(task: dict) -> dict:
    import tasks  # the example, from its folder

    if task["id"] == os.environ.get("KILL_RUN_ON") and _once("kill"):
        kill_the_run()
    return tasks.mission.fn(task)


faulty_mission_graph = pp.stage(faulty_mission, replicas=2)
