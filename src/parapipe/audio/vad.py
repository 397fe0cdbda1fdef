"""Find speech with the Silero VAD that faster-whisper ships (ONNX, no download).

Every later stage works on the speech regions this stage finds: Whisper skips silence (where
it would otherwise hallucinate "Thank you."), the speaker stage embeds each region on its
own, and pitch is measured on speech only. Regions are capped at 30 s, Whisper's window, so
long recordings reach the models in pieces they can take whole.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import parapipe as pp

from .clip import AudioClip, require_setup
from .device import onnx_providers

__all__ = ["Segment"]


class Segment(pp.Stage):
    """Add speech segments, ``(start, end)`` in seconds, to an `AudioClip`.

    Args:
        threshold: Silero speech probability above which a 32 ms window counts as speech.
        min_silence: seconds of silence that end a segment. Speaker turns are only found at
            pauses at least this long, so keep it short for conversations.
        min_speech: segments shorter than this (seconds) are dropped as clicks and breaths.
        pad: seconds added on each side, so words are not clipped.
        max_segment: longest segment in seconds; longer speech is split at a pause.
    """

    name = "vad"
    cpus = 1

    def __init__(
        self,
        threshold: float = 0.5,
        min_silence: float = 0.3,
        min_speech: float = 0.25,
        pad: float = 0.2,
        max_segment: float = 30.0,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise pp.ConfigError(f"Segment: threshold must be in (0, 1), got {threshold!r}")
        # Not `self.options`: that is Stage.options(), which the engine calls.
        self.vad_params = {
            "threshold": threshold,
            "min_silence_duration_ms": int(min_silence * 1000),
            "min_speech_duration_ms": int(min_speech * 1000),
            "speech_pad_ms": int(pad * 1000),
            "max_speech_duration_s": max_segment,
        }
        self._vad_options: Any = None

    def setup(self) -> None:
        """Load Silero and size its ONNX thread pool to this worker's budget."""
        from faster_whisper.vad import VadOptions

        _use_threads(pp.current().cpus, pp.current().gpus)
        self._vad_options = VadOptions(**self.vad_params)
        self._find(np.zeros(16_000, np.float32))  # first run allocates; keep it out of timings

    def process(self, item: AudioClip) -> AudioClip:
        start = time.perf_counter()
        require_setup(self._vad_options, self)
        segments = self._find(item.audio)
        return item.with_timing("vad", time.perf_counter() - start, segments=segments)

    def _find(self, audio: np.ndarray) -> tuple[tuple[float, float], ...]:
        from faster_whisper.vad import get_speech_timestamps

        if audio.size == 0:
            return ()
        found = get_speech_timestamps(audio, self._vad_options, sampling_rate=16_000)
        return tuple((round(s["start"] / 16_000, 3), round(s["end"] / 16_000, 3)) for s in found)


def _use_threads(cpus: int, gpus: tuple[int, ...] = ()) -> None:
    """Rebuild faster-whisper's cached Silero session with ``cpus`` intra-op threads, on the
    worker's GPU when it was given one and onnxruntime has CUDA.

    ``faster_whisper.vad.get_vad_model()`` is the one model ``get_speech_timestamps`` uses and
    it hard-codes one thread. It is cached per process, and each worker is its own process,
    so replacing its session here changes this worker only.
    """
    import onnxruntime
    from faster_whisper.utils import get_assets_path
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = max(1, cpus)
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    path = f"{get_assets_path()}/silero_vad_v6.onnx"
    model.session = onnxruntime.InferenceSession(path, providers=onnx_providers(gpus), sess_options=opts)
