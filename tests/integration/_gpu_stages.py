"""Stages of the GPU-sharing tests; module level so spawned workers can import them."""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import parapipe as pp


class Where(pp.Stage):
    """Reports what the worker was given: its CUDA environment and ``pp.current()``."""

    def process(self, item: Any) -> dict[str, Any]:
        ctx = pp.current()
        return {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "order": os.environ.get("CUDA_DEVICE_ORDER"),
            "gpus": ctx.gpus,
            "fraction": ctx.gpu_fraction,
            "device": ctx.device,
            "pid": os.getpid(),
        }


class _Cuda:
    """What the worker's memory cap calls on torch.cuda, recorded."""

    def __init__(self) -> None:
        self.caps: list[tuple[float, int]] = []

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.caps.append((fraction, device))


class TorchUser(pp.Stage):
    """A stage whose module "imports torch": unpickling it in the worker installs a recording
    stand-in (never in the parent, which only pickles it), as ``import torch`` at the top of a
    real stage module would have loaded torch by then."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        sys.modules["torch"] = types.SimpleNamespace(cuda=_Cuda())  # type: ignore[assignment]

    def setup(self) -> None:
        self.caps_before_setup = list(sys.modules["torch"].cuda.caps)

    def process(self, item: Any) -> list[tuple[float, int]]:
        return self.caps_before_setup


class HoldGpu(pp.Stage):
    """Allocates ``mib`` MiB on its GPU in setup() and reports its pid and what torch sees."""

    def __init__(self, mib: int) -> None:
        self.mib = mib

    def setup(self) -> None:
        import torch

        self.hold = torch.ones(self.mib * 2**18, device=pp.current().device)

    def process(self, item: Any) -> dict[str, Any]:
        import torch

        return {"pid": os.getpid(), "sum": float(self.hold[:1024].sum()), "devices": torch.cuda.device_count()}
