"""Where the speech models run: on the worker's GPU when the stage was given one and the runtime
can use it, else on the CPU, so one graph runs unchanged on a laptop and on a GPU server.

A stage given a GPU whose runtime has no CUDA (a CPU-only onnxruntime or CTranslate2 wheel) runs
on the CPU and says so once in the log, rather than failing: the result is the same, only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

__all__ = ["onnx_providers", "whisper_device"]

log = logging.getLogger("parapipe")

CUDA_COMPUTE_TYPE = "float16"
"""CTranslate2's fast type on a GPU (``int8`` is the fast one on a CPU, and slower on a GPU)."""
CPU_COMPUTE_TYPE = "int8"


def onnx_providers(gpus: Sequence[int], available: Sequence[str] | None = None) -> list[str]:
    """onnxruntime execution providers: CUDA first when given a GPU and this onnxruntime has it."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    if gpus and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if gpus:
        log.warning(
            "given GPU(s) %s but onnxruntime has no CUDA provider (pip install onnxruntime-gpu); running on the CPU",
            list(gpus),
        )
    return ["CPUExecutionProvider"]


def whisper_device(gpus: Sequence[int], compute_type: str | None, cuda_devices: int | None = None) -> tuple[str, str]:
    """``(device, compute_type)`` for faster-whisper's ``WhisperModel``; a given compute type wins."""
    if cuda_devices is None:
        import ctranslate2

        cuda_devices = ctranslate2.get_cuda_device_count()
    if gpus and cuda_devices > 0:
        return "cuda", compute_type or CUDA_COMPUTE_TYPE
    if gpus:
        log.warning("given GPU(s) %s but CTranslate2 sees no CUDA device; transcribing on the CPU", list(gpus))
    return "cpu", compute_type or CPU_COMPUTE_TYPE
