"""Voiceprints: resemblyzer's pretrained speaker encoder (a 256-d d-vector, torch on CPU).

The encoder ships inside the resemblyzer wheel (``pretrained.pt``, 17 MB), so nothing is
downloaded. Its mel front end is librosa, whose numba kernels compile on first use: about
25 s the first time on a machine (numba caches the result on disk) and about 2 s in every
new process after that. `VoiceEmbedder.warm_up` pays this inside ``setup()`` so the first
item's timing, and the engine's CPU plan, see only the steady-state cost.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .clip import SAMPLE_RATE

__all__ = ["MIN_SPEECH_SECONDS", "VoiceEmbedder"]

_FRAME_SECONDS = 0.01
"""resemblyzer's mel hop: one frame per 10 ms."""

MIN_SPEECH_SECONDS = 0.5
"""Below this much voiced audio a d-vector is mostly noise; such a segment gets no voiceprint."""


class VoiceEmbedder:
    """Turn 16 kHz mono speech into an L2-normalised float32 voiceprint.

    Args:
        threads: torch intra-op threads; None leaves torch's default. Set it from the
            worker's budget (``pp.current().cpus``): torch otherwise starts one thread per
            core of the machine and oversubscribes the cores other stages were given.
    """

    def __init__(self, threads: int | None = None) -> None:
        import torch

        with warnings.catch_warnings():
            # resemblyzer 0.1.4, its last release, imports scipy.ndimage.morphology.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="resemblyzer")
            from resemblyzer import VoiceEncoder

        if threads is not None:
            torch.set_num_threads(threads)
        self._encoder: Any = VoiceEncoder("cpu", verbose=False)

    def warm_up(self) -> None:
        """Run the encoder once so librosa's numba kernels are compiled (or loaded) now."""
        t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        self._encoder.embed_utterance(tone.astype(np.float32))

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """The voiceprint of ``audio``, or None when it holds too little speech."""
        from resemblyzer import preprocess_wav

        # Normalises loudness and cuts pauses longer than ~0.2 s (webrtcvad), as in training.
        wav = preprocess_wav(np.asarray(audio, dtype=np.float32))
        if len(wav) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
            return None
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)

    def embed_windows(
        self, audio: np.ndarray, regions: tuple[tuple[float, float], ...], window: float, hop: float
    ) -> tuple[list[tuple[float, float]], np.ndarray]:
        """Voiceprints of sliding windows over each speech region, for diarization.

        Unlike `embed`, pauses are kept: a window's place in the file must stay exact. A
        region shorter than ``window`` (but at least `MIN_SPEECH_SECONDS`) is one window.
        Returns the windows' ``(start, end)`` seconds and an ``(n, 256)`` array of L2-normalised
        voiceprints; windows of the same length go through the encoder as one batch.
        """
        import torch
        from resemblyzer import audio as rz_audio

        size, step = round(window / _FRAME_SECONDS), round(hop / _FRAME_SECONDS)
        spans: list[tuple[float, float]] = []
        batches: dict[int, list[np.ndarray]] = {}
        order: dict[int, list[int]] = {}
        for start, end in regions:
            samples = np.asarray(audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], np.float32)
            if len(samples) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
                continue
            mel = rz_audio.wav_to_mel_spectrogram(rz_audio.normalize_volume(samples, -30, increase_only=True))
            length = min(size, len(mel))
            last = len(mel) - length
            offsets = list(range(0, last + 1, step))
            if offsets[-1] != last:
                offsets.append(last)
            for offset in offsets:
                order.setdefault(length, []).append(len(spans))
                batches.setdefault(length, []).append(mel[offset : offset + length])
                spans.append((round(start + offset * _FRAME_SECONDS, 3),
                              round(start + (offset + length) * _FRAME_SECONDS, 3)))
        vectors = np.zeros((len(spans), 256), np.float32)
        with torch.no_grad():
            for length, mels in batches.items():
                vectors[order[length]] = self._encoder(torch.from_numpy(np.stack(mels))).numpy()
        return spans, vectors

