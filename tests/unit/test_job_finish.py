"""`Job.finish`: whatever reaches an item's future is an `ItemError`, even a lost result."""

from __future__ import annotations

import os

import numpy as np
import pytest

import parapipe as pp
from parapipe import transport
from parapipe.scheduler import Job


def test_a_result_whose_segment_is_gone_fails_its_item_as_result_lost():
    arena = transport.SegmentArena()
    try:
        data = transport.encode(np.ones(1 << 18), arena=arena, threshold=1024)
        transport.release(transport.segment_names(data))
        future = Job(7, key="k7")
        future.finish(True, transport.Packed(data))
        err = future.exception()
    finally:
        arena.close()
        transport.sweep(os.getpid())
    assert isinstance(err, pp.ResultLost) and isinstance(err, pp.ItemError)
    assert (err.index, err.key) == (7, "k7") and "is gone" in err.message
    assert isinstance(err.__cause__, pp.TransportError)
    with pytest.raises(pp.ResultLost, match=r"item 7 .*lost in transport"):
        future.result()
