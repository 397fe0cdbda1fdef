"""The item that flows between the speech stages: decoded samples plus what is known so far.

`Decode` makes an `AudioClip`, `Segment` returns a copy with ``segments`` filled in, and the
analysis branches read it. It is a plain frozen dataclass of numpy and builtins so it pickles
cheaply across worker processes (8 s of audio is 512 KB).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = ["SAMPLE_RATE", "AudioClip", "branch_result", "require_setup"]

_T = TypeVar("_T")

SAMPLE_RATE = 16_000
"""Every model here (Silero VAD, Whisper, resemblyzer, wav2vec2) wants 16 kHz mono."""


@dataclass(frozen=True, eq=False)
class AudioClip:
    """16 kHz mono float32 audio with its provenance.

    Attributes:
        file: the path it came from, or the name given with in-memory input.
        audio: samples in [-1, 1], float32, mono.
        sample_rate: always `SAMPLE_RATE` after `Decode`.
        duration: seconds of audio.
        segments: speech regions as ``(start, end)`` seconds; None until `Segment` ran.
        timings: seconds each stage spent on this item so far, by stage key.
    """

    file: str
    audio: np.ndarray
    sample_rate: int
    duration: float
    segments: tuple[tuple[float, float], ...] | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    def with_timing(self, key: str, seconds: float, **changes: Any) -> AudioClip:
        """A copy with one more stage timing recorded (and optional field changes)."""
        return dataclasses.replace(self, timings={**self.timings, key: round(seconds, 4)}, **changes)

    def speech_regions(self) -> tuple[tuple[float, float], ...]:
        """The speech segments, or the whole clip when no VAD has run."""
        if self.segments is None:
            return ((0.0, self.duration),)
        return self.segments

    def cut(self, start: float, end: float) -> np.ndarray:
        """The samples between two times in seconds."""
        return self.audio[int(start * self.sample_rate) : int(end * self.sample_rate)]

    def speech(self, max_seconds: float | None = None) -> np.ndarray:
        """Speech samples only, concatenated, at most ``max_seconds`` of them."""
        parts = [self.cut(s, e) for s, e in self.speech_regions()]
        joined = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if max_seconds is not None:
            joined = joined[: int(max_seconds * self.sample_rate)]
        return joined


def branch_result(item: AudioClip, key: str, seconds: float, **fields: Any) -> dict[str, Any]:
    """A branch's output dict, carrying the file, duration and upstream timings along.

    `pp.Parallel` hands ``merge`` only the branch results, not the input, so each branch
    repeats the few bytes of provenance the merged result needs.
    """
    return {
        "file": item.file,
        "duration": item.duration,
        "timings": {**item.timings, key: round(seconds, 4)},
        **fields,
    }


def require_setup(state: _T | None, stage: object) -> _T:
    """``state``, made by ``setup()``; fails with a clear message when ``process()`` is
    called before ``setup()``. Returned so that callers (and type checkers) use it as set."""
    if state is None:
        raise RuntimeError(f"{type(stage).__name__}.process() called before setup()")
    return state
