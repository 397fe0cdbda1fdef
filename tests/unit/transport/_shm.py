"""Helpers shared by the transport tests: what this process left in /dev/shm, test arrays."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from parapipe.transport import SEGMENT_PREFIX, SHM_DIR, SegmentArena, decode, encode, release, segment_names, sweep

MIB = 1 << 20


def ours(owner: int | None = None) -> list[str]:
    """Names of the segments owned by ``owner`` (default: this process) in /dev/shm."""
    prefix = f"{SEGMENT_PREFIX}{os.getpid() if owner is None else owner}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


@contextlib.contextmanager
def no_leaked_segments() -> Iterator[None]:
    """Fail if this process owns a segment before or after the block (sweeping it after)."""
    assert ours() == [], "a previous test leaked segments"
    yield
    left = ours()
    sweep(os.getpid())
    assert left == [], f"segments left in /dev/shm: {left}"


def roundtrip(obj: Any, arena: SegmentArena, **kw: Any) -> tuple[Any, bytes]:
    """Encode, decode, release; return the copy and the message."""
    msg = encode(obj, arena=arena, **kw)
    back = decode(msg)
    release(segment_names(msg))
    return back, msg


def checksum(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def big_array(mib: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(mib * MIB // 4, dtype=np.float32)
