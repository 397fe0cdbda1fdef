"""Cap a torch worker to its share of GPU memory.

``torch.cuda.set_per_process_memory_fraction`` is the one knob that keeps replicas sharing a
device from taking each other's memory: torch's caching allocator otherwise keeps everything it
ever held. The worker never imports torch for it: a worker whose stage does not use torch
(CTranslate2, onnxruntime) would pay seconds and a CUDA context of its own for a cap that does
not apply to it. So the cap is set when torch is already loaded, right after the stage was
unpickled (its module's ``import torch`` ran: the cap holds before ``setup()`` loads the model)
and again after ``setup()`` (for stages that import torch there: later allocations are capped).
"""

from __future__ import annotations

import sys

__all__ = ["cap_memory"]


def cap_memory(fraction: float | None) -> bool:
    """Cap every visible CUDA device to ``fraction`` of its memory; True when a cap was set.

    Nothing happens without a fraction, without torch loaded, or when CUDA is not available
    (``is_available`` asks the driver without creating a context).
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if fraction is None or cuda is None or not cuda.is_available():
        return False
    for index in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(min(1.0, fraction), index)
    return True
