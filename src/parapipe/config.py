"""Named defaults and the parsing of human-friendly option values, in one place."""

from __future__ import annotations

import math
import numbers
import os
import re

from .errors import ConfigError

__all__ = ["DEFAULT_RETRIES", "DEFAULT_STARTUP_TIMEOUT", "parse_size"]

DEFAULT_RETRIES = 2
"""Extra attempts an item gets after its worker died (or after a ``retry_on`` exception)."""

DEFAULT_STARTUP_TIMEOUT = 600.0
"""Seconds every worker has to import and run setup(); large models on slow disks need minutes."""

DEFAULT_SPIN_US = 100
"""Microseconds an idle worker keeps polling its pipe before it sleeps (`spin_seconds`)."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str | None, option: str = "size") -> int | None:
    """Bytes from ``2GiB``, ``500MB``, ``1.5g`` or a plain number; None stays None."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return None if value is None else int(value)
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{option}: cannot read {value!r} as a size; write e.g. '2GiB', '500MB' or a number of bytes")
    return int(float(match.group(1)) * _UNITS[unit])


_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(value: float | str) -> float:
    """Items per second from ``rate_limit``: a number (per second) or ``"N/s"``, ``"N/min"``, ``"N/h"``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf:
        return float(value)
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or float(match[1]) <= 0:
        raise ConfigError(f"rate_limit must be a number per second or a string like '20/s', got {value!r}")
    return float(match[1]) / _PER[match[2]]


def spin_seconds() -> float:
    """How long a worker that just answered polls its pipe before it blocks: ``PARAPIPE_SPIN_US``
    microseconds (default `DEFAULT_SPIN_US`; 0 turns it off).

    Waking a process that sleeps in ``read`` costs ~30 µs on a virtual machine (the halted
    vCPU's exit and the wake-up interrupt), a third of a no-op call's round trip. A caller that
    submits again as soon as its result arrives finds the worker still polling, and pays
    nothing; an idle worker burns at most this much CPU once per answer.
    """
    raw = os.environ.get("PARAPIPE_SPIN_US", "").strip()
    if not raw:
        return DEFAULT_SPIN_US / 1e6
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1_000_000:
        raise ConfigError(f"PARAPIPE_SPIN_US={raw!r}: give microseconds from 0 (off) to 1000000")
    return value / 1e6
