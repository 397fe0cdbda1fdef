"""Stages of the environment tests: they report which interpreter and numpy they ran on."""

from __future__ import annotations

import os
import signal
import sys


def report(item: object) -> tuple[str, str, int]:
    import numpy

    return numpy.__version__, sys.executable, os.getpid()


def die_once(marker: str) -> tuple[str, str, int]:
    """Kill this worker the first time it sees ``marker`` (a path), answer the retry."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return report(marker)
