"""Export a speech age/gender model to the ONNX contract `parapipe.audio.GenderAge` loads.

    python scripts/export_age_model.py OUT.onnx [--repo audeering/wav2vec2-large-robust-24-ft-age-gender]

Run it on a machine that can reach the Hugging Face hub (our CI machines cannot; nothing
here downloads at analysis time). Needs ``torch``, ``transformers`` and ``onnx``. Then::

    analysis_graph(age_model="OUT.onnx")      # or: parapipe audio analyze --age-model OUT.onnx

The contract (docs/speech.md, "Age"): one float32 input ``signal`` of raw 16 kHz mono
samples, shape ``[batch, time]``, zero mean and unit variance per utterance; outputs
``logits_age`` ``[batch, 1]`` (age in years / 100) and ``logits_gender`` ``[batch, 3]``
(female, male, child; probabilities or logits). audeering's model is defined on its model
card, not in transformers, so its two heads are rebuilt here to load the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

DEFAULT_REPO = "audeering/wav2vec2-large-robust-24-ft-age-gender"
INPUT = "signal"
OUTPUTS = ("logits_age", "logits_gender")
OPSET = 17


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--repo", default=DEFAULT_REPO, help="Hugging Face repo of an audeering-style model")
    args = parser.parse_args(argv)
    export(load_audeering(args.repo), args.out)
    print(f"wrote {args.out}; checked with parapipe's loader: {check(args.out)}")
    return 0


def load_audeering(repo: str) -> Any:
    """audeering's age/gender model (wav2vec2 + an age head and a gender head), for export."""
    import torch
    from torch import nn
    from transformers import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    class Head(nn.Module):
        def __init__(self, config: Any, labels: int) -> None:
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = nn.Dropout(config.final_dropout)
            self.out_proj = nn.Linear(config.hidden_size, labels)

        def forward(self, x: Any) -> Any:
            return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))

    class AgeGenderModel(Wav2Vec2PreTrainedModel):  # as on the model card
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.wav2vec2 = Wav2Vec2Model(config)
            self.age = Head(config, 1)
            self.gender = Head(config, 3)
            self.init_weights()

        def forward(self, signal: Any) -> tuple[Any, Any]:
            pooled = torch.mean(self.wav2vec2(signal)[0], dim=1)
            return self.age(pooled), torch.softmax(self.gender(pooled), dim=1)

    return AgeGenderModel.from_pretrained(repo).eval()


def export(model: Any, path: Path, seconds: float = 2.0) -> Path:
    """Write ``model`` (``signal [batch, time] -> (age / 100, gender scores)``) as ONNX.

    Batch and time are dynamic axes, so any length of speech goes in. Uses the TorchScript
    exporter, which needs only the ``onnx`` package.
    """
    import torch

    example = torch.zeros(1, int(seconds * 16_000))
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs onnxscript.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model.eval(), (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {0: "batch", 1: "time"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    return path


def check(path: Path) -> dict[str, Any]:
    """What parapipe's loader predicts for a second of a 120 Hz buzz: the contract holds if this runs."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from parapipe.audio.age_model import OnnxAgeGender

    t = np.arange(16_000) / 16_000
    buzz = np.sign(np.sin(2 * np.pi * 120 * t)).astype(np.float32) * 0.1
    return OnnxAgeGender(path).predict(buzz)


if __name__ == "__main__":
    sys.exit(main())
