"""Fixtures of the transport tests: no test may leave a segment behind, and an arena per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parapipe.transport import SegmentArena

from ._shm import no_leaked_segments


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_leaked_segments():
        yield


@pytest.fixture
def arena() -> Iterator[SegmentArena]:
    arena = SegmentArena()
    yield arena
    arena.close()
