"""Gender from the voice's acoustics, and age only from a real model.

Gender without a model uses two physical cues of adult voices:

* F0, the pitch of the voice, tracked with probabilistic YIN (``librosa.pyin``) on the
  speech segments: adult men speak around 85-155 Hz, women around 165-255 Hz. The median
  over voiced frames is compared with 165 Hz in semitones.
* Formant dispersion, the mean spacing of the first three resonances of the vocal tract
  (LPC roots per voiced frame, ``librosa.lpc``): it shrinks as the tract gets longer,
  about 1000 Hz for a typical man and 1200 Hz for a woman.

F0 carries most of the weight; formants decide the unclear middle (155-185 Hz). Both are
combined in a logistic score whose probability is the reported ``gender_confidence``,
scaled down when little voiced speech was heard. Children's voices overlap women's on both
cues, so no child label is given without a model.

Age: there is no acoustic rule worth reporting, so ``age`` is None unless an ONNX model is
configured (see `parapipe.audio.age_model`). When that model also predicts gender, its
answer is used instead of the acoustic one (``gender_source: "model"``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import parapipe as pp

from .clip import SAMPLE_RATE, AudioClip, branch_result, require_setup

__all__ = ["GenderAge", "acoustic_gender", "gender_between", "voice_track"]

F0_BOUNDARY_HZ = 165.0
FORMANT_BOUNDARY_HZ = 1100.0
F0_WEIGHT = 1.0
"""Logit per semitone of median F0 above the boundary."""
FORMANT_WEIGHT = 0.3
"""Logit per 100 Hz of formant dispersion above the boundary."""
MIN_VOICED_SECONDS = 0.25
"""Below this much voiced speech (about two syllables) gender is None: nothing to measure."""
FULL_CONFIDENCE_SECONDS = 2.0
"""Less voiced speech than this scales the confidence down proportionally."""
_HOP = 512
"""32 ms frames. With 0.25-semitone pitch bins this makes pyin 7x cheaper than its default
(0.1 semitone, 16 ms); the median F0 moves by under 1 Hz."""
_VOICING_BETA = (1.5, 5.0)
"""pyin's prior over YIN thresholds (mean 0.23). librosa's default, (2, 18) with mean 0.1,
wants a periodicity dip that clean or synthetic speech reaches but real microphone speech
with noise and reverberation often does not: on pocketsphinx's "ten of clubs" (1.1 s, a
clear male voice at 110 Hz) it voiced no frame at all, hence ``gender: null``."""
_QUIET_DB = 35.0
"""Frames this far below the loudest one are breath or background, never voiced: the looser
voicing prior would otherwise find pitch in noise."""
_LPC_FRAME = 512
"""32 ms: short enough for the vocal tract to be still within one LPC frame."""


class GenderAge(pp.Stage):
    """Gender (with confidence) for the speech in an `AudioClip`, and age when a model is given.

    Args:
        age_model: path of an ONNX age/gender model, or None for ``age: None``.
        age_options: keyword arguments for `OnnxAgeGender` (output names, scale, labels).
        max_seconds: analyse at most this much speech; None (the default) analyses all of it,
            so that every speaker turn, however late in the file, gets its own gender.
    """

    name = "gender_age"
    cpus = 1

    def __init__(
        self,
        age_model: str | os.PathLike[str] | None = None,
        *,
        age_options: dict[str, Any] | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.age_model = None if age_model is None else os.fspath(age_model)
        if self.age_model is not None and not os.path.isfile(self.age_model):
            raise pp.ConfigError(f"GenderAge: age model {self.age_model!r} does not exist")
        self.age_options = dict(age_options or {})
        self.max_seconds = max_seconds
        self._model: Any = None
        self._ready = False

    def setup(self) -> None:
        """Compile pyin's numba kernels now (seconds) and load the age model, if any."""
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        acoustic_gender((0.3 * np.sin(2 * np.pi * 120 * t)).astype(np.float32))
        if self.age_model is not None:
            from .age_model import OnnxAgeGender

            self._model = OnnxAgeGender(self.age_model, threads=pp.current().cpus,
                                        **self.age_options)
        self._ready = True

    def process(self, item: AudioClip) -> dict[str, Any]:
        start = time.perf_counter()
        require_setup(self._ready or None, self)
        track = voice_track(item, self.max_seconds)
        result = {**gender_between(track), "gender_source": "acoustic", "age": None, "voice_track": track}
        speech = item.speech(self.max_seconds)
        if self._model is not None and len(speech) >= MIN_VOICED_SECONDS * SAMPLE_RATE:
            predicted = self._model.predict(speech)
            result["age"] = predicted["age"]
            if predicted["gender"] is not None:
                result.update(gender=predicted["gender"], gender_source="model",
                              gender_confidence=predicted["gender_confidence"])
        return branch_result(item, "gender_age", time.perf_counter() - start, **result)


def acoustic_gender(speech: np.ndarray) -> dict[str, Any]:
    """``gender`` ("male"/"female"/None), ``gender_confidence`` and the cues behind them."""
    return _decide(_frame_cues(speech), slice(None))


@dataclass(frozen=True)
class _Cues:
    """Per-frame cues, one frame per `_HOP` samples of the speech."""

    f0: np.ndarray
    """Hz; NaN where unvoiced."""
    voiced: np.ndarray
    spacing: np.ndarray
    """Formant dispersion (F3 - F1) / 2 in Hz (Fitch 1997); NaN where not measurable."""


def _frame_cues(speech: np.ndarray) -> _Cues:
    import librosa

    if len(speech) < 1024:
        return _Cues(np.zeros(0), np.zeros(0, bool), np.zeros(0))
    f0, voiced, _ = librosa.pyin(speech, fmin=60.0, fmax=500.0, sr=SAMPLE_RATE, frame_length=1024,
                                 hop_length=_HOP, resolution=0.25, beta_parameters=_VOICING_BETA)
    rms = librosa.feature.rms(y=speech, frame_length=1024, hop_length=_HOP)[0][: len(voiced)]
    voiced &= rms >= rms.max() * 10 ** (-_QUIET_DB / 20)
    f0 = np.where(voiced, f0, np.nan)
    frames = librosa.util.frame(speech, frame_length=_LPC_FRAME, hop_length=_HOP).T
    window = np.hamming(_LPC_FRAME)
    spacing = np.full(len(voiced), np.nan)
    for i, frame in enumerate(frames[: len(voiced)]):
        if not voiced[i] or np.abs(frame).max() < 1e-3:
            continue
        emphasised = np.append(frame[0], frame[1:] - 0.97 * frame[:-1]) * window
        formants = _lpc_formants(librosa.lpc(emphasised.astype(np.float64), order=16))
        if len(formants) >= 3:
            spacing[i] = (formants[2] - formants[0]) / 2
    return _Cues(f0, voiced, spacing)


def _decide(cues: _Cues, frames: slice) -> dict[str, Any]:
    """The logistic decision described in the module docstring, over some frames."""
    voiced = cues.voiced[frames]
    voiced_seconds = float(voiced.sum()) * _HOP / SAMPLE_RATE
    if voiced_seconds < MIN_VOICED_SECONDS:
        return {"gender": None, "gender_confidence": 0.0, "f0_median": None,
                "formant_dispersion": None, "voiced_seconds": round(voiced_seconds, 2)}
    f0_median = float(np.nanmedian(cues.f0[frames][voiced]))
    spacing = cues.spacing[frames]
    dispersion = float(np.nanmedian(spacing)) if np.isfinite(spacing).any() else None
    logit = F0_WEIGHT * 12 * np.log2(f0_median / F0_BOUNDARY_HZ)
    if dispersion is not None:
        logit += FORMANT_WEIGHT * (dispersion - FORMANT_BOUNDARY_HZ) / 100
    p_female = 1 / (1 + np.exp(-logit))
    certainty = abs(2 * p_female - 1) * min(1.0, voiced_seconds / FULL_CONFIDENCE_SECONDS)
    return {
        "gender": "female" if p_female >= 0.5 else "male",
        "gender_confidence": round(float(0.5 + certainty / 2), 3),
        "f0_median": round(f0_median, 1),
        "formant_dispersion": None if dispersion is None else round(dispersion),
        "voiced_seconds": round(voiced_seconds, 2),
    }


def voice_track(item: AudioClip, max_seconds: float | None = None) -> dict[str, list[float]]:
    """The voiced frames of the speech: file time, F0 and formant dispersion of each.

    The GenderAge branch runs beside the speaker branch and cannot know its turns, so it
    returns this compact track (three floats per voiced 32 ms frame) and `merge_result`
    decides each turn's gender from the frames inside it with `gender_between`.
    """
    track: dict[str, list[float]] = {"time": [], "f0": [], "spacing": []}
    budget = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    for start, end in item.speech_regions():
        samples = item.cut(start, end)
        if budget is not None:
            samples = samples[:budget]
            budget -= len(samples)
        cues = _frame_cues(samples)
        for i in np.flatnonzero(cues.voiced):
            track["time"].append(round(start + i * _HOP / SAMPLE_RATE, 3))
            track["f0"].append(round(float(cues.f0[i]), 1))
            track["spacing"].append(round(float(cues.spacing[i]), 1) if np.isfinite(cues.spacing[i]) else float("nan"))
        if budget is not None and budget <= 0:
            break
    return track


def gender_between(track: dict[str, list[float]], start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
    """Gender, confidence and cues from the voiced frames of ``track`` in ``[start, end)``."""
    times = np.asarray(track["time"], dtype=np.float64)
    inside = (times >= start) & (times < end)
    f0 = np.asarray(track["f0"], dtype=np.float64)[inside]
    spacing = np.asarray(track["spacing"], dtype=np.float64)[inside]
    return _decide(_Cues(f0, np.ones(len(f0), bool), spacing), slice(None))


def _lpc_formants(coefficients: np.ndarray) -> np.ndarray:
    """Resonances of an LPC filter: pole frequencies with a bandwidth under 400 Hz."""
    roots = np.roots(coefficients)
    roots = roots[np.imag(roots) > 0]
    freqs = np.angle(roots) * SAMPLE_RATE / (2 * np.pi)
    bandwidths = -np.log(np.abs(roots)) * SAMPLE_RATE / np.pi
    return np.sort(freqs[(freqs > 200) & (bandwidths < 400)])
