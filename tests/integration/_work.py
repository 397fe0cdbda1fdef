"""Simulated work for test stages: CPU time spent, not a sleep, so a stage is slow the way a
model is (it holds its worker busy) and nothing waits on the clock to synchronise."""

from __future__ import annotations

import time


def spend(seconds: float) -> None:
    """Keep this thread computing for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))
