"""scripts/export_age_model.py writes what `OnnxAgeGender` loads: checked with a tiny torch model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import REPO, require_audio_extra

pytestmark = pytest.mark.audio


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("export_age_model", REPO / "scripts" / "export_age_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_exported_model_runs_through_the_loader_with_any_length(tmp_path: Path) -> None:
    require_audio_extra()
    pytest.importorskip("onnx")
    import torch
    from torch import nn

    from parapipe.audio.age_model import OnnxAgeGender

    class Tiny(nn.Module):
        """Stands in for wav2vec2: a strided convolution over the samples, mean-pooled, two heads."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.frames = nn.Conv1d(1, 4, kernel_size=400, stride=320)
            self.age = nn.Linear(4, 1)
            self.gender = nn.Linear(4, 3)

        def forward(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = torch.relu(self.frames(signal[:, None, :])).mean(-1)
            return torch.sigmoid(self.age(pooled)), torch.softmax(self.gender(pooled), dim=1)

    path = _script().export(Tiny(), tmp_path / "tiny.onnx")
    loader = OnnxAgeGender(path)
    assert (loader.input.name, loader.age_output, loader.gender_output) == ("signal", "logits_age", "logits_gender")
    speech = np.random.default_rng(0).normal(0, 0.1, 3 * 16_000).astype(np.float32)  # not the export length
    out = loader.predict(speech)
    normalised = (speech - speech.mean()) / np.sqrt(speech.var() + 1e-7)
    with torch.no_grad():
        age, gender = Tiny()(torch.from_numpy(normalised[None, :]))
    assert out["age"] == pytest.approx(float(age) * 100, abs=0.1)
    assert out["gender"] == ("female", "male", "child")[int(gender.argmax())]
    assert out["gender_confidence"] == pytest.approx(float(gender.max()), abs=1e-3)
