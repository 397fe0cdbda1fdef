"""A batched inference server: network -> CPU preprocessing (2 replicas) -> model batching up to
128 items or 1 s -> results back to the caller.

    parapipe serve server:graph --port 8000
"""

from __future__ import annotations

from typing import Any

import numpy as np

import parapipe as pp

FEATURES = 64


@pp.stage(replicas=2)
def preprocess(request: dict[str, Any]) -> np.ndarray:
    """The CPU-heavy part (the seed's audio/video decoding): text to a normalised feature vector."""
    codes = np.frombuffer(str(request["text"]).encode().ljust(FEATURES, b" ")[:FEATURES], dtype=np.uint8)
    spectrum = np.abs(np.fft.rfft(codes.astype(np.float32), n=2 * FEATURES))[:FEATURES]
    return spectrum / (np.linalg.norm(spectrum) or 1.0)


class Model(pp.Stage):
    """Loaded once, in its worker (the seed: "the model must be initialised in the child").
    Items from all callers are grouped into batches of up to 128, waiting at most 1 s."""

    batch_size = 128
    batch_wait = 1.0

    def setup(self) -> None:
        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal((FEATURES, 3)).astype(np.float32)

    def process_batch(self, items: list[np.ndarray]) -> list[dict[str, Any]]:
        scores = np.stack(items) @ self.weights
        labels = scores.argmax(axis=1)
        pairs = zip(labels, scores, strict=True)
        return [{"label": int(k), "score": float(s[k]), "batch": len(items)} for k, s in pairs]


graph = pp.Pipeline(preprocess, Model())
