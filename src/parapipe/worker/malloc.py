"""glibc's malloc, set for a process that runs the same large computation again and again.

By default glibc gives memory back to the system eagerly: a block of 128 KiB or more gets its
own ``mmap`` (unmapped again by ``free``), and free memory at the top of the heap is returned
once more than 128 KiB of it is free. It raises both limits by itself after freeing a large
mapped block, but never past 32 MiB. A model call that allocates and frees hundreds of
megabytes of temporaries therefore gets fresh pages from the kernel, faulted in and zeroed,
on every call. Measured on this project's 2-core machine (``docs/throughput.md``): Whisper
tiny.en under CTranslate2 took 475,000 minor page faults and 3.5 CPU s for 9 short files in a
worker, and 40 faults and 2.7 CPU s with the settings below. A process that happened to import
torch first paid the lower figure (torch's import frees a large block early), which is why the
single-process baselines of ``benchmarks/speech.py`` had been cheaper per file than our workers.

So a worker keeps what it freed for its next call (`_SETTINGS`): no per-block mappings, up to
`TRIM_THRESHOLD` of free memory kept at the top of the heap, and one heap for all its
threads. Memory is still returned above that, and resident memory stays bounded by the
worker's peak, which ``max_memory`` bounds.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["TRIM_THRESHOLD", "keep_freed_memory"]

TRIM_THRESHOLD = 256 << 20
"""Free bytes at the top of the heap a worker keeps for reuse before returning the rest."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
"""No block gets its own mapping; 256 MiB may stay free at the top of the heap; and one arena,
the main one, for every thread. The last matters as much as the others: CTranslate2 runs the
model in a thread of its own, whose arena is a set of mapped heaps that glibc unmaps whenever
one empties. In a process where that happened, the first two settings alone still left 1.4
million page faults per pass over the speech corpus; with one arena, 36. A worker's threads
are few (its CPU budget), so they seldom wait for the arena's lock."""
_USER_SETTINGS = (
    "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
)  # fmt: skip


def keep_freed_memory() -> bool:
    """Set this process's malloc as above; False where it left malloc alone: not glibc, or the
    user set malloc's own variables (``MALLOC_*_``, ``GLIBC_TUNABLES=glibc.malloc...``), which
    win: that is also how to keep glibc's defaults in the workers."""
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):  # no such name: not glibc (musl, macOS)
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(option, value) for option, value in _SETTINGS)
