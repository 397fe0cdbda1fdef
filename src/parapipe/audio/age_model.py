"""Run a wav2vec2-style age/gender model exported to ONNX (bring your own; none ships).

Expected shape of such a model, e.g. audeering's wav2vec2-large-robust-24-ft-age-gender
exported with ``torch.onnx.export``: one float input of raw 16 kHz samples, ``[batch, time]``
or ``[time]``; outputs named with ``age`` (a regression, often age / 100) and/or ``gender``
(logits or probabilities over ``gender_labels``). Everything else is configurable.

Pre-processing matches Hugging Face's ``Wav2Vec2FeatureExtractor(do_normalize=True)``:
zero mean, unit variance per utterance. Models trained without it need ``normalize=False``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import parapipe as pp

from .clip import SAMPLE_RATE
from .device import onnx_providers

__all__ = ["OnnxAgeGender"]

_MAX_AGE = 120.0


class OnnxAgeGender:
    """An ONNX age/gender model with its pre- and post-processing.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (give the worker's budget).
        gpus: run on these GPUs when onnxruntime has CUDA; None: the worker's (``pp.current().gpus``).
        normalize: zero-mean, unit-variance input, as wav2vec2 feature extractors do.
        age_output / gender_output: output names; None finds the outputs whose names
            contain ``age`` / ``gender``.
        age_scale: multiply the age output by this (audeering's models predict age / 100).
        gender_labels: class names, in the order of the gender output.
        max_seconds: only this much speech is fed in; attention cost grows with length squared.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int = 1,
        gpus: tuple[int, ...] | None = None,
        normalize: bool = True,
        age_output: str | None = None,
        gender_output: str | None = None,
        age_scale: float = 100.0,
        gender_labels: Sequence[str] = ("female", "male", "child"),
        max_seconds: float = 20.0,
    ) -> None:
        self.session = _session(os.fspath(path), threads, pp.current().gpus if gpus is None else gpus)
        self.input = self.session.get_inputs()[0]
        names = [o.name for o in self.session.get_outputs()]
        self.age_output = age_output or _find(names, "age")
        self.gender_output = gender_output or _find(names, "gender")
        if self.age_output is None and self.gender_output is None:
            raise pp.ConfigError(f"age model {os.fspath(path)!r}: no output named like 'age' or "
                                 f"'gender' among {names}; pass age_output= / gender_output=")
        self.normalize = normalize
        self.age_scale = age_scale
        self.gender_labels = tuple(gender_labels)
        self.max_samples = int(max_seconds * SAMPLE_RATE)

    def predict(self, audio: np.ndarray) -> dict[str, Any]:
        """``age`` (years) and ``gender`` / ``gender_confidence`` for 16 kHz speech."""
        wanted = [n for n in (self.age_output, self.gender_output) if n is not None]
        values = dict(zip(wanted, self.session.run(wanted, {self.input.name: self._prepare(audio)}),
                          strict=True))
        out: dict[str, Any] = {"age": None, "gender": None, "gender_confidence": None}
        if self.age_output is not None:
            age = float(np.asarray(values[self.age_output]).reshape(-1)[0]) * self.age_scale
            out["age"] = round(float(np.clip(age, 0.0, _MAX_AGE)), 1)
        if self.gender_output is not None:
            probs = _probabilities(np.asarray(values[self.gender_output], np.float64).reshape(-1))
            if len(probs) != len(self.gender_labels):
                raise pp.ConfigError(f"age model gender output has {len(probs)} classes but "
                                     f"gender_labels has {len(self.gender_labels)}")
            best = int(np.argmax(probs))
            out.update(gender=self.gender_labels[best], gender_confidence=round(float(probs[best]), 3))
        return out

    def _prepare(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio[: self.max_samples], dtype=np.float32)
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        rank = len(self.input.shape or [None, None])
        return x.reshape((1,) * (rank - 1) + (-1,)).astype(np.float32)


def _session(path: str, threads: int, gpus: tuple[int, ...]) -> Any:
    import onnxruntime

    if not os.path.isfile(path):
        raise pp.ConfigError(f"age model {path!r} does not exist")
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=onnx_providers(gpus))


def _find(names: list[str], word: str) -> str | None:
    matches = [n for n in names if word in n.lower()]
    return matches[0] if matches else None


def _probabilities(values: np.ndarray) -> np.ndarray:
    """Softmax, unless the model already outputs probabilities (audeering's does)."""
    if np.all(values >= 0) and abs(values.sum() - 1.0) < 1e-3:
        return values
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()
