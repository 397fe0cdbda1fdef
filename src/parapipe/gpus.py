"""GPU plans: which devices exist and which replicas share each of them.

A stage asks for GPUs in one of three ways (see `parapipe.stage.Stage`):

* device ids, ``gpus=[0, 1]`` or ``[[0, 1]]``: taken as given, neither checked nor counted;
* whole devices, ``gpus=1`` (or 2, ...): each replica gets that many devices of its own;
* a share, ``gpus=0.25`` and/or ``gpu_memory="8GiB"``: replicas of any stages are packed onto
  devices so that no device gives out more than all of its compute or all of its memory.

The CPU plan (`parapipe.resources`) knows nothing of this: `attach` adds each replica's devices
and memory cap to the budgets it made, for the replica counts they have, so a re-plan after
``cpus="auto"`` places the new replicas too. Packing is bin packing: the plan first spreads
replicas over the least-used devices (balanced load), and only when that fails packs them
first-fit; when both fail it refuses with a `ConfigError` listing what was asked and what exists.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .config import parse_size
from .errors import ConfigError
from .plantree import compact_ids
from .resources import WorkerBudget
from .stage import Stage

__all__ = ["GpuDevice", "GpuRequest", "GpuSlot", "as_devices", "attach", "discover", "format_devices", "plan_gpus"]

_EPS = 1e-9
"""Slack for float shares: ten replicas of ``gpus=0.1`` fill a device, they do not overflow it."""


@dataclass(frozen=True)
class GpuDevice:
    """One device the planner may use. ``memory`` is None where nothing told us (no NVML)."""

    index: int
    memory: int | None = None
    name: str = ""


@dataclass(frozen=True)
class GpuRequest:
    """What one stage asks for, per replica: ``pinned`` ids, or ``whole`` devices, or a share
    (``share`` of the compute and/or ``memory`` bytes of one device)."""

    stage: str
    replicas: int
    pinned: tuple[tuple[int, ...], ...] = ()
    whole: int = 0
    share: float = 0.0
    memory: int | None = None

    @property
    def placed(self) -> bool:
        return not self.pinned and bool(self.whole or self.share or self.memory)


@dataclass(frozen=True)
class GpuSlot:
    """What one replica gets: the devices it sees, and the share of their memory it may use
    (None: no cap), which a torch worker applies with ``set_per_process_memory_fraction``."""

    ids: tuple[int, ...]
    fraction: float | None = None


# --------------------------------------------------------------------------- devices


def as_devices(spec: Sequence[int] | Mapping[int, int | str] | Sequence[GpuDevice]) -> tuple[GpuDevice, ...]:
    """The devices an engine was told to plan on: ids (memory unknown), ``{id: "80GiB"}``, or
    `GpuDevice` objects. For tests, and for machines where discovery sees too much or too little."""
    if isinstance(spec, Mapping):
        found = [GpuDevice(i, parse_size(m, f"gpu_devices[{i}]")) for i, m in spec.items()]
    else:
        found = [d if isinstance(d, GpuDevice) else GpuDevice(d) for d in spec]
    for d in found:
        if isinstance(d.index, bool) or not isinstance(d.index, int) or d.index < 0:
            raise ConfigError(f"gpu_devices must name device ids >= 0, got {spec!r}")
        if d.memory is not None and d.memory <= 0:
            raise ConfigError(f"gpu_devices: device {d.index} must have memory > 0, got {d.memory}")
    if len({d.index for d in found}) != len(found):
        raise ConfigError(f"gpu_devices names a device twice: {spec!r}")
    return tuple(sorted(found, key=lambda d: d.index))


def discover() -> tuple[GpuDevice, ...]:
    """The devices of this machine: NVML's (with memory), limited to ``CUDA_VISIBLE_DEVICES``
    when it is set; else the ids that variable lists; else ``torch.cuda.device_count()``; else none.

    Only called when a stage asks for a share or whole devices, so a CPU pipeline never pays
    for it (importing torch takes seconds).
    """
    from . import nvml

    visible = _visible_ids(os.environ.get("CUDA_VISIBLE_DEVICES"))
    listed = nvml.devices()
    if listed is not None:
        return tuple(GpuDevice(i, mem, name) for i, mem, name in listed if visible is None or i in visible)
    if visible is not None:
        return tuple(GpuDevice(i) for i in visible)
    if importlib.util.find_spec("torch") is None:
        return ()
    import torch

    return tuple(GpuDevice(i) for i in range(torch.cuda.device_count()))  # counts without a CUDA context


def _visible_ids(value: str | None) -> tuple[int, ...] | None:
    """The ids in ``CUDA_VISIBLE_DEVICES`` (None when unset); CUDA stops at the first invalid one."""
    if value is None:
        return None
    ids: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith(("GPU-", "MIG-")):
            raise ConfigError(
                f"CUDA_VISIBLE_DEVICES={value!r} names devices by UUID, which parapipe cannot plan with; "
                "name them by index, or pass Engine(gpu_devices=[...]) with the indices to use"
            )
        if not part.isdigit():
            break
        ids.append(int(part))
    return tuple(ids)


# --------------------------------------------------------------------------- requests


def request_of(stage: Stage, replicas: int) -> GpuRequest:
    """The GPU request of ``replicas`` replicas of ``stage``, from its ``gpus`` and ``gpu_memory``."""
    spec, memory = stage.gpus, parse_size(stage.gpu_memory, f"stage {stage.stage_name!r} gpu_memory")
    name = stage.stage_name
    if isinstance(spec, numbers.Real):
        if spec >= 1:
            return GpuRequest(name, replicas, whole=int(spec), memory=memory)
        return GpuRequest(name, replicas, share=float(spec), memory=memory)
    if spec:
        return GpuRequest(name, replicas, pinned=tuple(stage.gpus_for(i) for i in range(replicas)), memory=memory)
    return GpuRequest(name, replicas, memory=memory)


# --------------------------------------------------------------------------- packing


def plan_gpus(requests: Sequence[GpuRequest], devices: Sequence[GpuDevice]) -> dict[str, list[GpuSlot]]:
    """One slot per replica of every request, by stage name; `ConfigError` when they do not fit."""
    by_index = {d.index: d for d in devices}
    out: dict[str, list[GpuSlot]] = {}
    for req in requests:
        if req.pinned:
            out[req.stage] = [GpuSlot(ids, _fraction(req, ids, by_index)) for ids in req.pinned]
        elif not req.placed:
            out[req.stage] = [GpuSlot(())] * req.replicas
    placed = [req for req in requests if req.placed]
    if placed:
        _check_placeable(placed, devices)
        ids = _pack(placed, devices, spread=True) or _pack(placed, devices, spread=False)
        if ids is None:
            raise ConfigError(_overflow(placed, devices))
        for req in placed:
            chosen = [ids[(req.stage, r)] for r in range(req.replicas)]
            out[req.stage] = [GpuSlot(c, _fraction(req, c, by_index)) for c in chosen]
    return out


def _check_placeable(requests: Sequence[GpuRequest], devices: Sequence[GpuDevice]) -> None:
    if not devices:
        names = ", ".join(repr(r.stage) for r in requests)
        raise ConfigError(
            f"stage(s) {names} ask for GPUs but none was found (NVML, CUDA_VISIBLE_DEVICES, torch.cuda); "
            'pip install "parapipe[gpu]" so NVML can list them, or pass Engine(gpu_devices=[0, ...])'
        )
    unknown = [d.index for d in devices if d.memory is None]
    for req in requests:
        if req.memory is not None and unknown:
            raise ConfigError(
                f"stage {req.stage!r} asks for gpu_memory but the memory of device(s) {compact_ids(unknown)} "
                'is unknown; pip install "parapipe[gpu]" (NVML reads it), or pass Engine(gpu_devices={0: "80GiB"})'
            )


_Free = dict[int, list[float]]
"""Per device index: [free share, free memory bytes (inf when unknown)]."""


def _pack(
    requests: Sequence[GpuRequest], devices: Sequence[GpuDevice], *, spread: bool
) -> dict[tuple[str, int], tuple[int, ...]] | None:
    """Device ids per (stage, replica), largest asks first; None when some replica does not fit."""
    free: _Free = {d.index: [1.0, float("inf") if d.memory is None else float(d.memory)] for d in devices}
    totals = {d.index: free[d.index][1] for d in devices}
    slots = [(req, r) for req in requests for r in range(req.replicas)]
    slots.sort(key=lambda s: (s[0].whole, s[0].share, s[0].memory or 0), reverse=True)
    out: dict[tuple[str, int], tuple[int, ...]] = {}
    for req, r in slots:
        if req.whole:
            chosen = [i for i, (share, mem) in free.items() if share >= 1 - _EPS and mem >= totals[i]][: req.whole]
            if len(chosen) < req.whole:
                return None
            for i in chosen:
                free[i] = [0.0, 0.0]
            out[(req.stage, r)] = tuple(chosen)
            continue
        fits = [i for i in free if _fits(req, free[i], totals[i])]
        if not fits:
            return None
        i = max(fits, key=lambda i: (free[i][0], -i)) if spread else fits[0]
        free[i][0] -= req.share
        free[i][1] -= _memory(req, totals[i])
        out[(req.stage, r)] = (i,)
    return out


def _fits(req: GpuRequest, free: list[float], total: float) -> bool:
    return free[0] >= req.share - _EPS and free[1] >= _memory(req, total) - _EPS * max(1.0, total)


def _memory(req: GpuRequest, total: float) -> float:
    """Bytes a shared replica takes: what it asked for, else its share of the device's memory."""
    if req.memory is not None:
        return float(req.memory)
    return 0.0 if total == float("inf") else req.share * total


def _fraction(req: GpuRequest, ids: tuple[int, ...], by_index: Mapping[int, GpuDevice]) -> float | None:
    """The share of its devices' memory a replica may use: its ``gpu_memory`` over the smallest
    of them, else its share of a device; None (no cap) for whole or pinned devices."""
    if req.memory is None:
        return req.share or None
    sizes = [by_index[i].memory if i in by_index else None for i in ids]
    known = [s for s in sizes if s is not None]
    if not ids or len(known) != len(ids):
        raise ConfigError(
            f"stage {req.stage!r} asks for gpu_memory on devices {compact_ids(ids)}, whose memory is unknown; "
            'pip install "parapipe[gpu]" (NVML reads it), or pass Engine(gpu_devices={0: "80GiB"})'
        )
    return min(1.0, req.memory / min(known))


def _overflow(requests: Sequence[GpuRequest], devices: Sequence[GpuDevice]) -> str:
    asks = "; ".join(_describe(req) for req in requests)
    have = ", ".join(f"{d.index}" + (f" ({_gib(d.memory)})" if d.memory else "") for d in devices)
    share = sum(req.replicas * (req.whole or req.share) for req in requests)
    return (
        f"the GPU stages do not fit on the devices: {asks}; that is {share:g} device(s) of compute, "
        f"on {len(devices)} device(s): {have}. Lower replicas, gpus or gpu_memory, or add devices "
        "(a replica's share stays on one device)"
    )


def _describe(req: GpuRequest) -> str:
    each = (
        f"{req.whole} whole device(s)"
        if req.whole
        else " and ".join(
            part for part in (f"{req.share:g} GPU" if req.share else "", _gib(req.memory) if req.memory else "") if part
        )
    )
    return f"{req.stage!r} {req.replicas} x {each}"


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GiB"


# --------------------------------------------------------------------------- budgets


def attach(
    budgets: list[WorkerBudget], stages: Sequence[Stage], devices: Callable[[], Sequence[GpuDevice]]
) -> list[WorkerBudget]:
    """``budgets`` with each replica's GPUs and memory cap, planned for as many replicas as they
    have. ``devices`` is only called when some stage needs placing or a memory cap."""
    counts: dict[str, int] = {}
    for b in budgets:
        counts[b.stage] = max(counts.get(b.stage, 0), b.replica + 1)
    requests = [request_of(s, counts[s.stage_name]) for s in stages if s.stage_name in counts]
    if not any(req.placed or req.memory is not None for req in requests):
        return budgets
    slots = plan_gpus(requests, devices())
    return [dataclasses.replace(b, gpus=slot.ids, gpu_fraction=slot.fraction)
            for b in budgets for slot in (slots[b.stage][b.replica],)]  # fmt: skip


def format_devices(devices: Sequence[GpuDevice], budgets: Sequence[WorkerBudget]) -> str:
    """One line per device: its name, its memory, and the replicas planned on it with their shares."""
    lines = []
    for d in devices:
        users = [f"{b.stage}#{b.replica}" + (f" ({b.gpu_fraction:g})" if b.gpu_fraction else "")
                 for b in budgets if d.index in b.gpus]  # fmt: skip
        about = "  ".join(part for part in (d.name, _gib(d.memory) if d.memory else "") if part)
        lines.append(f"gpu {d.index}" + (f"  {about}" if about else "") + f"  replicas: {', '.join(users) or '-'}")
    return "\n".join(lines)
