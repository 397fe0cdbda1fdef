"""Stages of the item-memory tests (module level, so spawned workers can import them)."""

from __future__ import annotations


def kilobyte(n: int) -> bytes:
    return bytes([n % 256]) * 1024
