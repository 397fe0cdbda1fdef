"""Stages of the journaled-map tests, and a script to interrupt; module level so spawned workers
can import them.

``python -m tests.integration._journal_stages DB N`` maps N items through a journal and prints
``running`` after the 20th result, so a test can send SIGINT while items are in flight.
"""

from __future__ import annotations

import sys

import parapipe as pp

from ._work import spend

BIG = 2 << 20


def big(n: int) -> bytes:
    """A result over the journal's default 1 MiB limit."""
    return bytes([n % 256]) * BIG


def slow_square(x: int) -> int:
    spend(0.005)  # keeps items in flight when the test interrupts
    return x * x


def _main(db: str, n: int) -> int:
    try:
        with pp.Engine(pp.stage(slow_square, replicas=2)) as engine:
            for i, _ in enumerate(engine.map(range(n), journal=db, key=str)):
                if i == 20:
                    print("running", flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], int(sys.argv[2])))
