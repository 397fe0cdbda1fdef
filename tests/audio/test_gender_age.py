"""GenderAge: acoustic gender on the corpus; age only through an ONNX model's pre/post-processing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import parapipe as pp
from parapipe.audio import AudioClip, GenderAge
from parapipe.audio.age_model import OnnxAgeGender

from .conftest import Corpus, require_audio_extra

pytestmark = pytest.mark.audio

GENDER_LOGITS = [0.2, 2.0, -1.0]  # female, male, child: softmax gives male, 0.82


def test_gender_accuracy_on_the_corpus(
    corpus: Corpus, clips: dict[str, Any], gender_stage: GenderAge
) -> None:
    labelled = corpus.files("test") + corpus.files("enroll")
    wrong = []
    for path, label in labelled:
        result = gender_stage.process(clips[str(path.relative_to(corpus.root))])
        assert result["age"] is None and result["gender_source"] == "acoustic"
        assert 0.5 <= result["gender_confidence"] <= 1.0
        if result["gender"] != label["gender"]:
            wrong.append((path.name, result["gender"], result["f0_median"]))
    assert 1 - len(wrong) / len(labelled) >= 0.9, wrong


def test_silence_has_no_gender(gender_stage: GenderAge) -> None:
    quiet = AudioClip("quiet", np.zeros(16_000, np.float32), 16_000, 1.0, segments=())
    result = gender_stage.process(quiet)
    assert (result["gender"], result["gender_confidence"], result["age"]) == (None, 0.0, None)


def _tiny_model(path: Path, *, rank: int = 2, probabilities: bool = False,
                names: tuple[str, str] = ("logits_age", "logits_gender")) -> Path:
    """A wav2vec2-shaped stand-in: age = 0.35 * mean(x^2), constant gender scores.

    With zero-mean unit-variance input, mean(x^2) is 1, so the model says 35 years exactly
    when (and only when) the caller normalised the waveform first.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    gender = np.exp(GENDER_LOGITS) / np.exp(GENDER_LOGITS).sum() if probabilities else GENDER_LOGITS
    axes = list(range(rank))
    nodes = [
        helper.make_node("Mul", ["signal", "signal"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["power"], axes=axes, keepdims=1),
        helper.make_node("Mul", ["power", "scale"], [names[0]]),
        helper.make_node("Mul", ["power", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "gender_const"], [names[1]]),
    ]
    shape = ["batch", "time"] if rank == 2 else ["time"]
    graph = helper.make_graph(
        nodes, "tiny_age_gender",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [1] * rank),
         helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [1, 3])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [], [0.35]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("gender_const", TensorProto.FLOAT, [1, 3], list(gender)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def speech() -> np.ndarray:
    t = np.arange(2 * 16_000) / 16_000
    return (0.05 * np.sin(2 * np.pi * 110 * t) + 0.01).astype(np.float32)  # quiet, offset


@pytest.mark.parametrize("rank", [1, 2])
def test_onnx_model_pre_and_post_processing(tmp_path: Path, speech: np.ndarray, rank: int) -> None:
    require_audio_extra()
    model = OnnxAgeGender(_tiny_model(tmp_path / "m.onnx", rank=rank))
    out = model.predict(speech)
    softmax = np.exp(GENDER_LOGITS) / np.exp(GENDER_LOGITS).sum()
    assert out == {"age": 35.0, "gender": "male",
                   "gender_confidence": pytest.approx(round(float(softmax[1]), 3))}


def test_without_normalisation_the_raw_waveform_goes_in(tmp_path: Path, speech: np.ndarray) -> None:
    require_audio_extra()
    model = OnnxAgeGender(_tiny_model(tmp_path / "m.onnx"), normalize=False)
    expected = 0.35 * float(np.mean(speech.astype(np.float64) ** 2)) * 100
    assert model.predict(speech)["age"] == pytest.approx(expected, abs=0.1)


def test_probability_outputs_are_not_softmaxed_again(tmp_path: Path, speech: np.ndarray) -> None:
    require_audio_extra()
    model = OnnxAgeGender(_tiny_model(tmp_path / "m.onnx", probabilities=True))
    assert model.predict(speech)["gender_confidence"] == pytest.approx(0.82, abs=0.01)


def test_stage_reports_the_models_age_and_gender(
    tmp_path: Path, clips: dict[str, Any]
) -> None:
    stage = GenderAge(_tiny_model(tmp_path / "m.onnx"))
    stage.setup()
    result = stage.process(clips["test/carol_1.wav"])
    assert (result["age"], result["gender"], result["gender_source"]) == (35.0, "male", "model")
    assert result["f0_median"] > 200  # the acoustic cues are still reported


def test_model_configuration_errors(tmp_path: Path) -> None:
    require_audio_extra()
    with pytest.raises(pp.ConfigError, match="does not exist"):
        GenderAge(tmp_path / "missing.onnx")
    odd = _tiny_model(tmp_path / "odd.onnx", names=("out_a", "out_b"))
    with pytest.raises(pp.ConfigError, match="no output named like 'age' or 'gender'"):
        OnnxAgeGender(odd)
    two_labels = OnnxAgeGender(odd, age_output="out_a", gender_output="out_b",
                               gender_labels=("female", "male"))
    with pytest.raises(pp.ConfigError, match="3 classes but gender_labels has 2"):
        two_labels.predict(np.ones(16_000, np.float32))
