"""The speech stages run on the worker's GPU when given one and the runtime has CUDA, else on the CPU."""

from __future__ import annotations

import logging

import pytest

from parapipe import context
from parapipe.audio import vad
from parapipe.audio.device import onnx_providers, whisper_device

CUDA_ORT = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_uses_cuda_only_when_given_a_gpu_and_available() -> None:
    assert onnx_providers((0,), CUDA_ORT) == CUDA_ORT
    assert onnx_providers((), CUDA_ORT) == ["CPUExecutionProvider"]


def test_onnx_without_cuda_falls_back_to_the_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="parapipe"):
        assert onnx_providers((0,), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in caplog.text


def test_whisper_device_and_compute_type() -> None:
    assert whisper_device((0,), None, cuda_devices=1) == ("cuda", "float16")
    assert whisper_device((0,), "int8_float16", cuda_devices=1) == ("cuda", "int8_float16")
    assert whisper_device((), None, cuda_devices=1) == ("cpu", "int8")
    assert whisper_device((0,), None, cuda_devices=0) == ("cpu", "int8")


def test_the_vad_session_asks_for_cuda_in_a_gpu_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Silero session on this machine's onnxruntime: CPU-only here, so it must still build."""
    monkeypatch.setattr(context, "_current", context.WorkerContext("vad", 0, 1, (0,), gpus=(0,)))
    stage = vad.Segment()
    stage.setup()
    from faster_whisper.vad import get_vad_model

    assert get_vad_model().session.get_providers()[-1] == "CPUExecutionProvider"
