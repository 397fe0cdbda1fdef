"""A stage is a model kept alive in its own worker process(es).

The `Stage` object is built in the parent, pickled to each worker *before* ``setup()`` runs,
so constructor arguments travel and model state made in ``setup()`` never does.
"""

from __future__ import annotations

import copy
import importlib
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from .config import parse_size
from .errors import ConfigError

__all__ = ["Stage", "stage"]

GpuSpec = Sequence[int] | Sequence[Sequence[int]] | None

_OPTION_NAMES = (
    "name",
    "cpus",
    "replicas",
    "gpus",
    "retries",
    "retry_on",
    "timeout",
    "max_memory",
    "max_items_per_worker",
    "batch_size",
    "batch_wait",
    "batch_fallback",
)

F = TypeVar("F", bound=Callable[..., Any])


class Stage:
    """Subclass this, give ``setup()`` and ``process()``; set options as class attributes.

    Options:
        cpus: cores (and thread-pool size) per replica, or ``"auto"`` to let the engine measure.
        replicas: how many worker processes serve this stage.
        gpus: device ids; ``[0, 1]`` gives replica *i* device ``i % 2``, ``[[0, 1]]`` gives every
            replica both. Set as ``CUDA_VISIBLE_DEVICES`` before any user code runs.
        name: the stage's name in errors, stats and plans (defaults to the class name).
        retries: extra attempts after the worker died (default: the engine's, 2) or after an
            exception listed in ``retry_on``. User exceptions are not retried by default: most
            are deterministic, and retrying them only triples the time to the same error.
        retry_on: exception types worth retrying (e.g. ``(ConnectionError, pp.TaskTimeout)``).
        timeout: seconds one item may run; past it the worker is killed and replaced, and the
            item fails with `TaskTimeout` (or is retried if ``retry_on`` lists TaskTimeout).
        max_memory: RSS limit per worker (``"2GiB"``). Over it between items, the worker is
            recycled; over it during an item, it is killed and that item fails.
        max_items_per_worker: recycle a worker after this many items (for leaky libraries).
        batch_size: define ``process_batch(items) -> list`` and items arriving from concurrent
            requests and ``map`` are grouped into batches of up to this many (or of this much
            ``batch_cost``) before they reach the worker.
        batch_wait: the most seconds a batch waits to fill, from its first item's arrival.
        batch_fallback: when ``process_batch`` raises, retry the batch's items one by one so only
            the bad item fails (else every item of the batch gets the error).
    """

    name: str | None = None
    cpus: int | str = 1
    replicas: int = 1
    gpus: GpuSpec = None
    retries: int | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    max_memory: int | str | None = None
    max_items_per_worker: int | None = None
    batch_size: float = 8
    batch_wait: float = 0.01
    batch_fallback: bool = False

    def setup(self) -> None:
        """Load the model. Runs once per worker, after the CPU budget is applied."""

    def process(self, item: Any) -> Any:
        """Handle one item and return its result."""
        raise NotImplementedError(f"{type(self).__name__} must define process(item)")

    def batch_cost(self, item: Any) -> float:
        """The size of one item in a batch, in the units of ``batch_size`` (default: 1 item).

        Runs in the parent for every item, so keep it cheap: e.g. ``len(item) / 16000`` seconds.
        """
        return 1.0

    @property
    def batched(self) -> bool:
        """True when this stage defines ``process_batch``: its items are batched."""
        return callable(getattr(self, "process_batch", None))

    def teardown(self) -> None:
        """Release what ``setup()`` took. Runs when the worker stops cleanly."""

    @property
    def stage_name(self) -> str:
        return self.name or type(self).__name__

    def options(self, **opts: Any) -> Stage:
        """A copy of this stage with some options changed, e.g. ``S().options(replicas=2)``."""
        unknown = set(opts) - set(_OPTION_NAMES)
        if unknown:
            raise ConfigError(f"unknown stage option(s) {sorted(unknown)}; use {list(_OPTION_NAMES)}")
        clone = copy.copy(self)
        for key, value in opts.items():
            setattr(clone, key, value)
        clone.validate()
        return clone

    def validate(self) -> None:
        """Check the options; raise `ConfigError` saying what to fix."""
        name = self.stage_name
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ConfigError(f"stage {name!r}: replicas must be an int >= 1, got {self.replicas!r}")
        if self.cpus != "auto" and (not isinstance(self.cpus, int) or self.cpus < 1):
            raise ConfigError(f"stage {name!r}: cpus must be an int >= 1 or 'auto', got {self.cpus!r}")
        self.gpus_for(0)
        if self.retries is not None and (not isinstance(self.retries, int) or self.retries < 0):
            raise ConfigError(f"stage {name!r}: retries must be an int >= 0, got {self.retries!r}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise ConfigError(f"stage {name!r}: retry_on must be a tuple of exception types, got {self.retry_on!r}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ConfigError(f"stage {name!r}: timeout must be a number of seconds > 0, got {self.timeout!r}")
        parse_size(self.max_memory, f"stage {name!r} max_memory")
        if self.max_items_per_worker is not None and (
            not isinstance(self.max_items_per_worker, int) or self.max_items_per_worker < 1
        ):
            raise ConfigError(f"stage {name!r}: max_items_per_worker must be an int >= 1")

    def gpus_for(self, replica: int) -> tuple[int, ...]:
        """The GPU device ids given to one replica."""
        if not self.gpus:
            return ()
        spec = list(self.gpus)
        chosen = spec[replica % len(spec)]
        ids = tuple(chosen) if isinstance(chosen, (list, tuple)) else (chosen,)
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ConfigError(f"stage {self.stage_name!r}: gpus must hold device ids, got {self.gpus!r}")
        return ids

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stage_name!r} replicas={self.replicas} cpus={self.cpus}>"


class _FunctionStage(Stage):
    """A plain function as a stage. Pickled as a reference to the function, never by value."""

    def __init__(self, fn: Callable[..., Any], **opts: Any) -> None:
        if not callable(fn):
            raise ConfigError(f"pp.stage() needs a function, got {fn!r}")
        self.fn = fn
        self.name = opts.pop("name", None) or getattr(fn, "__name__", "stage")
        for key, value in opts.items():
            if key not in _OPTION_NAMES:
                raise ConfigError(f"unknown stage option {key!r}; use {list(_OPTION_NAMES)}")
            setattr(self, key, value)
        self.validate()

    def process(self, item: Any) -> Any:
        return self.fn(item)

    def __call__(self, item: Any) -> Any:
        return self.fn(item)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("process", None)
        state["fn"] = _function_ref(self.fn, self.stage_name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """In the worker, ``process`` becomes the function itself: one call per item instead of
        two, which is a third of the cost of a cheap item in ``map``."""
        ref = state["fn"]
        state["fn"] = _resolve_function(*ref) if isinstance(ref, tuple) else ref
        self.__dict__.update(state)
        self.process = self.fn  # type: ignore[method-assign]


def _function_ref(fn: Callable[..., Any], name: str) -> tuple[str, str] | Callable[..., Any]:
    """Name the function by import path when it was replaced by its own stage (decorator use)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module is None or "<" in qualname:
        raise ConfigError(
            f"stage {name!r}: {fn!r} cannot be sent to a worker process; "
            "define the function at module level (lambdas and nested functions cannot be pickled)"
        )
    try:
        found = _lookup(module, qualname)
    except (ImportError, AttributeError):
        return fn
    if found is fn:
        return fn
    return (module, qualname)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve_function(module: str, qualname: str) -> Callable[..., Any]:
    try:
        found = _lookup(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise pickle.UnpicklingError(f"cannot import stage function {module}.{qualname}: {exc}") from exc
    return found.fn if isinstance(found, _FunctionStage) else found


@overload
def stage(fn: F, /, **opts: Any) -> _FunctionStage: ...
@overload
def stage(fn: None = None, /, **opts: Any) -> Callable[[F], _FunctionStage]: ...


def stage(fn: Callable[..., Any] | None = None, /, **opts: Any) -> Any:
    """Make a stage of a plain function: ``pp.stage(fn, cpus=1, replicas=2)`` or ``@pp.stage(...)``.

    The function must live at module level so workers can import it under ``spawn``.
    """
    if fn is None:
        return lambda f: _FunctionStage(f, **opts)
    return _FunctionStage(fn, **opts)
