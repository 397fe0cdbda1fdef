"""``rate_limit``: when the next item of a stage may leave for a worker, across all its replicas.

It lives in the parent's dispatcher because that is the one place that decides when items are
sent, for every replica at once; a limit per worker would multiply with ``replicas``.

A bucket of at most ``burst`` tokens (2 by default: the second token only lets the
dispatcher catch up when its timer woke late, so the long-run rate stays the limit rather than
drifting below it on a loaded machine). Pure, clocked by its caller, like the `Dispatcher`.
"""

from __future__ import annotations

import math

__all__ = ["RateLimit"]


class RateLimit:
    def __init__(self, per_second: float, *, burst: int = 2) -> None:
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._burst = burst
        self._next = -math.inf
        """When the next item may go (monotonic seconds)."""

    def available(self, now: float) -> int:
        """Items that may go now."""
        if now < self._next:
            return 0
        if self._next == -math.inf:
            return self._burst
        return min(self._burst, 1 + int((now - self._next) / self._interval))

    def take(self, n: int, now: float) -> None:
        """``n`` items went at ``now`` (a batch may take more than is available: it is then owed)."""
        self._next = max(self._next, now - self._interval * (self._burst - 1)) + n * self._interval

    def wait(self, now: float) -> float:
        """Seconds until the next item may go."""
        return max(0.0, self._next - now)
