"""Starting and stopping worker processes: the parts that touch the OS, not the routing."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

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
                self._on_expired(key)

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
