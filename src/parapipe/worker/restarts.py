"""Replacement workers whose ``setup()`` fails: started again after a growing delay, then given up.

A model that fails to load usually fails for a reason that outlives one try (a missing file, a
full GPU), so replacements back off exponentially, and after `MAX_STARTUP_FAILURES` in a row the
stage is declared failed rather than spawning in a tight loop. A replacement that gets ready
resets the count: one bad start among good ones is noise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..resources import WorkerBudget

log = logging.getLogger("parapipe")

MAX_STARTUP_FAILURES = 5
"""Replacements in a row whose setup() fails before the stage is declared failed."""
BACKOFF_BASE = 0.2
BACKOFF_MAX = 10.0


class StartupBackoff:
    """Counts failed starts in a row; schedules the next replacement or fails the stage."""

    def __init__(self, spawn: Callable[[WorkerBudget], None], fail: Callable[[str], None]) -> None:
        self._spawn = spawn
        self._fail = fail
        self._lock = threading.Lock()
        self._failures = 0
        self._timers: set[threading.Timer] = set()
        self._closed = False

    def ready(self) -> None:
        """A worker finished setup(): the run of failures is over."""
        with self._lock:
            self._failures = 0

    def failed(self, budget: WorkerBudget, message: str) -> None:
        """A replacement died before it was ready: try again later, or give the stage up."""
        with self._lock:
            self._failures += 1
            failures = self._failures
        if failures >= MAX_STARTUP_FAILURES:
            self._fail(f"{failures} replacement workers in a row failed to start; last: {message}")
            return
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1))
        log.error("%s; retrying in %.1f s", message, delay)

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._closed:
                    return
            self._spawn(budget)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()

    def close(self) -> None:
        """No replacement starts after this; pending ones are cancelled."""
        with self._lock:
            self._closed = True
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()
