"""A stage whose calls fail twice, as a flaky service does (module level: workers import it)."""

from __future__ import annotations

import time


def flaky_twice(log: str) -> int:
    """Raises ConnectionError on its first two calls (counted in the file ``log``, which also
    records when each call began), then answers the number of calls."""
    with open(log, "a") as f:
        f.write(f"{time.monotonic()}\n")
    with open(log) as f:
        calls = len(f.readlines())
    if calls <= 2:
        raise ConnectionError(f"refused (call {calls})")
    return calls
