"""Who speaks when: diarization over the whole file, clusters named through the voice registry.

The stage embeds short sliding windows of the speech, clusters them into voices and cuts
overlap-free turns (`parapipe.audio.diarize`), so a change of speaker is found with or
without a pause. Each voice's centroid then goes through `VoiceRegistry.identify`: an
enrolled person is named, a stranger gets the registry's stable ``unknown-N``. Two clusters
that match the same stored voice get the same label (one person split in two is joined).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import parapipe as pp

from .clip import SAMPLE_RATE, AudioClip, branch_result, require_setup
from .diarize import HOP_SECONDS, JOIN_GAP_SECONDS, MERGE_THRESHOLD, WINDOW_SECONDS, diarize
from .voices import DEFAULT_THRESHOLD, VoiceRegistry

__all__ = ["Speaker"]

IDENTIFY_SECONDS = 6.0
"""Speech of each voice embedded for the registry, about one enrolment clip's worth. On the
quality corpora (`benchmarks/quality.py`) 6 s named every enrolled turn, as 10 s did, and cut
the speaker branch's CPU by 11 %: with the turns of a long conversation this print, not the
sliding windows, was half the encoder's work."""


class Speaker(pp.Stage):
    """Speaker turns ``[{start, end, speaker, score}]`` with enrolled names or ``unknown-N``.

    Args:
        voices: path of the SQLite voice registry (see `parapipe.audio.voices`). Give one so
            that unknown voices keep their labels across files, replicas and restarts; None
            keeps a registry in this worker's memory only.
        threshold: cosine similarity for "same voice as a stored one"; None uses the
            registry's calibrated threshold, else `DEFAULT_THRESHOLD`.
        learn_unknown: store voices that match nobody as ``unknown-N``; if False they are
            labelled None and the registry is never written.
        num_speakers: the number of speakers when known; None finds it.
        min_speakers, max_speakers: bounds on the number found.
        cluster_threshold: centroid similarity at which two clusters of one file are joined
            as one voice (`parapipe.audio.diarize.MERGE_THRESHOLD`).
        window, hop: seconds of each embedded window, and between window starts.
    """

    name = "speaker"
    cpus = 1

    def __init__(
        self,
        voices: str | os.PathLike[str] | None = None,
        *,
        threshold: float | None = None,
        learn_unknown: bool = True,
        num_speakers: int | None = None,
        min_speakers: int = 1,
        max_speakers: int | None = None,
        cluster_threshold: float = MERGE_THRESHOLD,
        window: float = WINDOW_SECONDS,
        hop: float = HOP_SECONDS,
    ) -> None:
        for name, value in (("threshold", threshold), ("cluster_threshold", cluster_threshold)):
            if value is not None and not -1.0 <= value <= 1.0:
                raise pp.ConfigError(f"Speaker: {name} is a cosine similarity in [-1, 1], got {value!r}")
        if num_speakers is not None and num_speakers < 1:
            raise pp.ConfigError(f"Speaker: num_speakers must be >= 1 or None, got {num_speakers!r}")
        if min_speakers < 1 or (max_speakers is not None and max_speakers < min_speakers):
            raise pp.ConfigError(f"Speaker: need 1 <= min_speakers <= max_speakers, got "
                                 f"{min_speakers!r} and {max_speakers!r}")
        if not 0.0 < hop <= window:
            raise pp.ConfigError(f"Speaker: need 0 < hop <= window seconds, got hop={hop!r}, window={window!r}")
        self.voices = None if voices is None else os.fspath(voices)
        self.threshold = threshold
        self.learn_unknown = learn_unknown
        self.num_speakers = num_speakers
        self.min_speakers = min_speakers
        self.max_speakers = max_speakers
        self.cluster_threshold = cluster_threshold
        self.window = window
        self.hop = hop
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
        regions = item.speech_regions()
        spans, vectors = self._embedder.embed_windows(item.audio, regions, self.window, self.hop)
        found = diarize(spans, vectors, regions, num_speakers=self.num_speakers, min_speakers=self.min_speakers,
                        max_speakers=self.max_speakers, threshold=self.cluster_threshold)
        names = [self._name(registry, self._voiceprint(item, found.turns, k, centroid))
                 for k, centroid in enumerate(found.centroids)]
        turns = _join([{"start": s, "end": e, "speaker": names[k][0], "score": names[k][1]}
                       for s, e, k in found.turns])
        return branch_result(
            item, "speaker", time.perf_counter() - start,
            speaker=_dominant(turns),
            speakers=sorted({t["speaker"] for t in turns if t["speaker"] is not None}),
            turns=turns,
        )

    def _voiceprint(self, item: AudioClip, turns: list[tuple[float, float, int]], k: int, centroid: Any) -> Any:
        """One voice's print for the registry: its turns embedded as one utterance.

        The mean of its 1 s window prints would do, but it is less specific (one synthetic
        voice scored 0.80 against another's enrolment that way, 0.76 this way): the
        registry's prints come from whole utterances, so the cluster is compared as one.
        """
        parts = [item.cut(s, e) for s, e, owner in turns if owner == k]
        speech = np.concatenate(parts)[: int(IDENTIFY_SECONDS * SAMPLE_RATE)] if parts else np.zeros(0, np.float32)
        vector = self._embedder.embed(speech)
        return centroid if vector is None else vector

    def _name(self, registry: VoiceRegistry, centroid: Any) -> tuple[str | None, float | None]:
        """The registry's label for one voice, with its similarity (None: learn_unknown off)."""
        threshold = self.threshold
        if threshold is None:
            threshold = registry.threshold if registry.threshold is not None else DEFAULT_THRESHOLD
        match = registry.identify(centroid, threshold, learn=self.learn_unknown)
        return (None, None) if match is None else (match.label, match.score)


def _join(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge back-to-back turns that ended up with the same label."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        if out and out[-1]["speaker"] == turn["speaker"] and turn["start"] - out[-1]["end"] < JOIN_GAP_SECONDS:
            out[-1] = {**out[-1], "end": turn["end"]}
        else:
            out.append(turn)
    return out


def _dominant(turns: list[dict[str, Any]]) -> str | None:
    """The speaker with the most speech time."""
    seconds: dict[str, float] = {}
    for t in turns:
        if t["speaker"] is not None:
            seconds[t["speaker"]] = seconds.get(t["speaker"], 0.0) + t["end"] - t["start"]
    return max(seconds, key=lambda k: seconds[k]) if seconds else None
