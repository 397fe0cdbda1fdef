"""Who speaks: a voiceprint per speech segment, matched against the voice registry.

Diarization here is per VAD segment: every segment gets its own voiceprint and label, so a
change of speaker is found wherever the speakers leave a pause of at least the `Segment`
stage's ``min_silence`` (0.3 s by default). Two people talking over each other, or with no
pause at all, end up in one segment under the label of whoever dominates it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import parapipe as pp

from .clip import AudioClip, branch_result, require_setup
from .voices import DEFAULT_THRESHOLD, VoiceRegistry

__all__ = ["Speaker"]


class Speaker(pp.Stage):
    """Label each speech segment with an enrolled name or a stable ``unknown-N``.

    Args:
        voices: path of the SQLite voice registry (see `parapipe.audio.voices`). Give one so
            that unknown voices keep their labels across replicas and restarts; None keeps
            a registry in this worker's memory only.
        threshold: cosine similarity for "same voice"; None uses the registry's calibrated
            threshold, else `DEFAULT_THRESHOLD`.
        learn_unknown: store voices that match nobody as ``unknown-N``; if False they are
            labelled None and the registry is never written.
    """

    name = "speaker"
    cpus = 1

    def __init__(
        self,
        voices: str | os.PathLike[str] | None = None,
        *,
        threshold: float | None = None,
        learn_unknown: bool = True,
    ) -> None:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise pp.ConfigError(f"Speaker: threshold is a cosine similarity, got {threshold!r}")
        self.voices = None if voices is None else os.fspath(voices)
        self.threshold = threshold
        self.learn_unknown = learn_unknown
        self._embedder: Any = None
        self._registry: VoiceRegistry | None = None

    def setup(self) -> None:
        """Load the encoder with this worker's thread budget and compile librosa's kernels."""
        from .embedding import VoiceEmbedder

        self._embedder = VoiceEmbedder(threads=pp.current().cpus)
        self._embedder.warm_up()
        self._registry = VoiceRegistry(self.voices or ":memory:")

    def teardown(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def process(self, item: AudioClip) -> dict[str, Any]:
        start = time.perf_counter()
        registry = require_setup(self._registry, self)
        turns = [self._label(registry, item, s, e) for s, e in item.speech_regions()]
        _fill_gaps(turns)
        return branch_result(
            item, "speaker", time.perf_counter() - start,
            speaker=_dominant(turns),
            speakers=sorted({t["speaker"] for t in turns if t["speaker"] is not None}),
            segments=turns,
        )

    def _label(
        self, registry: VoiceRegistry, item: AudioClip, start: float, end: float
    ) -> dict[str, Any]:
        """One segment's speaker, or None when it is too short to tell."""
        turn: dict[str, Any] = {"start": start, "end": end, "speaker": None, "score": None}
        vector = self._embedder.embed(item.cut(start, end))
        if vector is None:
            return turn
        threshold = self.threshold
        if threshold is None:
            threshold = registry.threshold if registry.threshold is not None else DEFAULT_THRESHOLD
        match = registry.identify(vector, threshold, learn=self.learn_unknown)
        if match is not None:
            turn.update(speaker=match.label, score=match.score)
        return turn


def _fill_gaps(turns: list[dict[str, Any]]) -> None:
    """Give a segment too short to embed the label of the nearest labelled segment."""
    labelled = [t for t in turns if t["speaker"] is not None]
    for turn in turns:
        if turn["speaker"] is None and labelled:
            centre = (turn["start"] + turn["end"]) / 2
            nearest = min(labelled, key=lambda t: abs((t["start"] + t["end"]) / 2 - centre))
            turn["speaker"] = nearest["speaker"]


def _dominant(turns: list[dict[str, Any]]) -> str | None:
    """The speaker with the most speech time."""
    seconds: dict[str, float] = {}
    for t in turns:
        if t["speaker"] is not None:
            seconds[t["speaker"]] = seconds.get(t["speaker"], 0.0) + t["end"] - t["start"]
    return max(seconds, key=lambda k: seconds[k]) if seconds else None

