"""CPU priority of workers: stages off the critical path yield the cores to the ones on it.

A throughput plan on few cores runs more workers than there are cores (whisper's two replicas
beside a speaker model and a gender model on two cores), and the kernel shares the cores fairly
among them. Fair is not what a batch wants. The files of a batch finish when their slowest
branch does, so every second a side branch takes from that branch while it still has work
is a second added at the end, where the side branch would have found an idle core anyway: the
last whisper call of a batch runs alone on one core while the other waits. On the speech
corpus on 2 cores, side branches at nice 19 finished batches of 9 files 6-7 % sooner and a
long stream as fast as before (`benchmarks/priority.py`). The side branches lose nothing that
matters for throughput: they catch up in the gaps, and the window of items in flight bounds
how far they lag.

Only stages the planner sizes (``cpus="auto"``, or the audio app's built-in plan) and whose
``nice`` is unset get it; a stage's own ``nice`` wins, and 0 keeps it normal. The exception is
``Engine(cpus="auto")``, which plans every stage's ``cpus`` and ``nice`` afresh for its mode.
Raising a nice value needs no privilege; lowering it again does, which is why a worker's nice
only ever goes up while it lives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .resources import LatencyTree, critical_path

__all__ = ["SLACK_NICE", "lower_priority", "slack_stages"]

log = logging.getLogger(__name__)

SLACK_NICE = 19
"""The nice value of a stage off the critical path: the lowest, 1.5 % of a normal worker's share
of a contended core (kernel weights 15 against 1024), so it runs in the gaps. Nice 10 (a tenth)
measured slower in both workloads of `benchmarks/priority.py`, and 2 % slower than fair sharing
in a long stream: a side branch that still preempts whisper now and then costs more than it
saves. The price is paid beside a busy program in the engine's own scheduling group (docs/
throughput.md)."""


def slack_stages(tree: LatencyTree, costs: Mapping[str, float]) -> set[str]:
    """Stages on no critical path: the lighter branches of every parallel split, by the
    single-thread seconds of their longest chain. A pipeline without splits has none."""
    slack: set[str] = set()
    _mark(tree, costs, critical=True, slack=slack)
    return slack


def _mark(tree: LatencyTree, costs: Mapping[str, float], *, critical: bool, slack: set[str]) -> None:
    kind, body = tree
    if isinstance(body, str):  # a stage
        if not critical:
            slack.add(body)
        return
    children = list(body)
    if kind == "seq":
        for child in children:
            _mark(child, costs, critical=critical, slack=slack)
        return
    paths = [critical_path(child, costs) for child in children]
    top = max(range(len(children)), key=paths.__getitem__, default=0)
    for i, child in enumerate(children):
        _mark(child, costs, critical=critical and i == top, slack=slack)


def lower_priority(nice: int, pid: int | str = "self") -> None:
    """Raise every thread of ``pid`` to at least ``nice`` (Linux keeps a nice value per thread;
    threads started later inherit their creator's). A thread already nicer stays as it is, and
    where the kernel refuses (a sandbox without setpriority), the worker runs at its old priority:
    a plan's preference, not worth failing a stage for."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if os.getpriority(os.PRIO_PROCESS, int(tid)) < nice:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            log.debug("cannot lower the priority of thread %s of %s: %s", tid, pid, exc)
            return
