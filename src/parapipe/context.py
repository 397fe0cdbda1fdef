"""What a worker knows about itself: `current()` returns the budget the planner gave it.

Libraries with their own thread knobs (faster-whisper ``cpu_threads``, onnxruntime
``intra_op_num_threads``) need the budget passed explicitly, so ``setup()`` reads it here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["WorkerContext", "current"]


@dataclass(frozen=True)
class WorkerContext:
    """The identity and CPU/GPU budget of the process running a stage."""

    stage: str | None
    """Name of the stage this worker serves; None outside a worker."""
    replica: int
    """Index of this worker among its stage's replicas."""
    cpus: int
    """Thread budget: size every thread pool of this worker to this many threads."""
    cores: tuple[int, ...]
    """CPU cores this worker is pinned to."""
    gpus: tuple[int, ...] = field(default=())
    """GPU device ids visible to this worker (also in ``CUDA_VISIBLE_DEVICES``, so inside the
    worker they are CUDA devices ``0 .. len(gpus) - 1``)."""
    pid: int = field(default_factory=os.getpid)
    gpu_fraction: float | None = None
    """The share of its GPUs' memory this worker may use, when it shares them (``gpus=0.25``,
    ``gpu_memory=...``); None when it has them whole. Torch workers are already capped to it."""

    @property
    def device(self) -> str:
        """``"cuda"`` when this worker was given a GPU, else ``"cpu"``: what to pass to
        ``torch.device``, ``model.to`` or faster-whisper's ``WhisperModel(device=...)``."""
        return "cuda" if self.gpus else "cpu"


_current: WorkerContext | None = None


def current() -> WorkerContext:
    """The budget of the running worker.

    Outside a worker (a stage's ``setup()`` called directly in a test or notebook) this returns
    a context for the whole process, so stage code runs unchanged in both places.
    """
    if _current is not None:
        return _current
    cores = tuple(sorted(os.sched_getaffinity(0)))
    return WorkerContext(stage=None, replica=0, cpus=len(cores), cores=cores)


def _set_current(ctx: WorkerContext | None) -> None:
    global _current
    _current = ctx
