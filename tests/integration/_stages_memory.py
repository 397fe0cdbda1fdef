"""Stages of the item-memory tests (module level, so spawned workers can import them)."""

from __future__ import annotations


def kilobyte(n: int) -> bytes:
    return bytes([n % 256]) * 1024


def zeros(nbytes: int) -> object:
    """An array of ``nbytes`` that costs next to nothing to make (calloc'd pages): a cheap
    stage, so chunked, whose large results each travel in their own shared-memory segment."""
    import numpy

    return numpy.zeros(nbytes, dtype=numpy.uint8)
