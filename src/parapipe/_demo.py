"""The built-in demo graph: three CPU-heavy "models" (BLAS matrix work) on the same input."""

from __future__ import annotations

from typing import Any

import parapipe as pp


class MatrixModel(pp.Stage):
    """Stands in for a model: a few large matrix products, multithreaded by OpenBLAS."""

    cpus = 1

    def __init__(self, name: str, size: int, rounds: int) -> None:
        self.name = name
        self.size = size
        self.rounds = rounds

    def setup(self) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal((self.size, self.size)).astype(np.float32)

    def process(self, item: Any) -> float:
        import numpy as np

        x = np.full((self.size, self.size), float(item) % 7 + 1, dtype=np.float32)
        for _ in range(self.rounds):
            x = np.tanh(x @ self.weights / self.size)
        return float(x.mean())


def graph() -> pp.Parallel:
    return pp.Parallel(
        transcribe=MatrixModel("transcribe", 384, 12),
        speaker=MatrixModel("speaker", 256, 8),
        gender=MatrixModel("gender", 256, 4),
    )
