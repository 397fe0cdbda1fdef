"""Tasks to bytes for one stage's workers, failing only the items that cannot be pickled.

A message carries many items; one unpicklable item (a lambda, an open file, a list nested past
the recursion limit) must fail alone, not take its neighbours or the sending thread with it. So
the whole message is tried first (the common case, one pickle), and only when it fails is each
item tried on its own; an item that pickles alone but not inside the message (recursion depth
adds up) fails with the rest that did not fit.
"""

from __future__ import annotations

import functools
import pickle
from typing import Any

from .. import transport
from . import protocol

Payload = list[tuple[int, Any]]


class MessageEncoder:
    """Encodes TASKS/BATCH messages into this stage's shared-memory arena."""

    def __init__(self, arena: transport.SegmentArena) -> None:
        self._encode = functools.partial(
            transport.encode_with_names, arena=arena, threshold=protocol.PIPE_MESSAGE_LIMIT
        )

    def encode(self, kind: int, payload: Payload) -> tuple[bytes, list[str], list[tuple[int, Exception]]]:
        """The message's bytes, the segments it names, and ``(task id, why)`` for each item left
        out because it cannot be sent."""
        try:
            data, names = self._encode((kind, payload))
            return data, names, []
        except Exception:  # find the unpicklable items one by one
            pass
        keep: Payload = []
        bad: list[tuple[int, Exception]] = []
        for tid, item in payload:
            try:
                pickle.dumps(item, protocol.PROTOCOL)
                keep.append((tid, item))
            except Exception as exc:  # this item's error, reported by the caller
                bad.append((tid, exc))
        try:
            data, names = self._encode((kind, keep))
        except Exception as exc:  # each pickles alone, not together (recursion depth): all fail
            bad += [(tid, exc) for tid, _ in keep]
            data, names = self._encode((kind, []))
        return data, names, bad
