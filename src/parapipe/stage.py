"""A stage is a model kept alive in its own worker process(es).

The `Stage` object is built in the parent, pickled to each worker *before* ``setup()`` runs,
so constructor arguments travel and model state made in ``setup()`` never does.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import numbers
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

from .config import parse_rate, parse_size
from .errors import ConfigError

__all__ = ["Stage", "same_stage", "stage"]

GpuSpec = Sequence[int] | Sequence[Sequence[int]] | float | None

_OPTION_NAMES = (
    "name",
    "cpus",
    "replicas",
    "gpus",
    "gpu_memory",
    "retries",
    "retry_on",
    "timeout",
    "max_memory",
    "max_items_per_worker",
    "batch_size",
    "batch_wait",
    "batch_fallback",
    "runtime_env",
    "python",
    "concurrency",
    "rate_limit",
    "nice",
)


_UNSET = object()


def _is_count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_number(value: Any) -> bool:
    """True for ints, floats and numpy scalars; False for bools, which are almost surely a bug."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_option(option: str, value: Any, who: str) -> None:
    """Raise `ConfigError` naming ``who`` when ``value`` is not valid for ``option``."""
    if option == "max_memory":
        parse_size(value, f"{who} max_memory")
        return
    if option == "gpu_memory":
        if value is not None and not (parse_size(value, f"{who} gpu_memory") or 0) > 0:
            raise ConfigError(f"{who}: gpu_memory must be a size > 0 such as '8GiB', or None; got {value!r}")
        return
    if option == "gpus":
        if _is_number(value):
            if not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
                raise ConfigError(
                    f"{who}: gpus must be a share of one device (0 < gpus < 1), a whole number of devices, "
                    f"or a list of device ids; got {value!r}"
                )
            return
        if value is not None and (isinstance(value, str) or not isinstance(value, Sequence)):
            raise ConfigError(f"{who}: gpus must be a list of device ids (or of lists of them), got {value!r}")
        for replica in range(len(value or ())):
            _gpu_ids(value, replica, who)
        return
    rule = _RULES[option]
    if not rule[0](value):
        raise ConfigError(f"{who}: {option} must be {rule[1]}, got {value!r}")


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: v is None or (isinstance(v, str) and v != ""), "a non-empty string or None"),
    "cpus": (lambda v: v == "auto" or _is_count(v, 1), "an int >= 1 or 'auto'"),
    "replicas": (lambda v: _is_count(v, 1), "an int >= 1"),
    "retries": (lambda v: v is None or _is_count(v, 0), "an int >= 0 or None"),
    "retry_on": (
        lambda v: isinstance(v, tuple) and all(isinstance(t, type) and issubclass(t, BaseException) for t in v),
        "a tuple of exception types",
    ),
    "timeout": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0 or None"),
    "max_items_per_worker": (lambda v: v is None or _is_count(v, 1), "an int >= 1 or None"),
    "batch_size": (
        lambda v: _is_number(v) and 0 < v < math.inf,
        "a number > 0 (items per batch, or total batch_cost when batch_cost is defined)",
    ),
    "batch_wait": (lambda v: _is_number(v) and 0 <= v < math.inf, "a number of seconds >= 0"),
    "batch_fallback": (lambda v: isinstance(v, bool), "True or False"),
    "runtime_env": (lambda v: v is None or isinstance(v, dict), "a dict (a Ray runtime env) or None"),
    "python": (
        lambda v: v is None or (isinstance(v, (str, os.PathLike)) and str(v) != ""),
        "a path to a Python interpreter, or to a virtualenv or conda env directory, or None",
    ),
    "concurrency": (lambda v: _is_count(v, 1), "an int >= 1 (items one worker runs at once)"),
    "rate_limit": (
        lambda v: v is None or _is_rate(v),
        "None, a number of items per second > 0, or a string such as '20/s', '600/min', '1000/h'",
    ),
    "nice": (lambda v: v is None or (_is_count(v, 0) and v <= 19), "an int from 0 to 19 (a Unix nice value) or None"),
}


def _is_rate(value: Any) -> bool:
    try:
        return parse_rate(value) > 0
    except ConfigError:
        return False


def _gpu_ids(gpus: GpuSpec, replica: int, who: str) -> tuple[int, ...]:
    """The device ids one replica gets from a ``gpus`` list."""
    if not gpus or isinstance(gpus, (int, float)):
        return ()
    spec = list(gpus)
    chosen = spec[replica % len(spec)]
    ids = tuple(chosen) if isinstance(chosen, (list, tuple)) else (chosen,)
    if not all(_is_count(i, 0) for i in ids):
        raise ConfigError(f"{who}: gpus must hold device ids, got {gpus!r}")
    return ids


class Stage:
    """Subclass this, give ``setup()`` and ``process()``; set options as class attributes.

    Options:
        cpus: cores (and thread-pool size) per replica, or ``"auto"`` to let the engine measure.
        replicas: how many worker processes serve this stage.
        gpus: device ids; ``[0, 1]`` gives replica *i* device ``i % 2``, ``[[0, 1]]`` gives every
            replica both. Or a number: ``0.25`` is a quarter of one device per replica, ``1`` (``2``)
            one (two) whole devices; the engine packs replicas onto devices (docs/gpu.md). Set as
            ``CUDA_VISIBLE_DEVICES`` before any user code runs; ``pp.current().gpus`` names them.
        gpu_memory: GPU memory per replica (``"8GiB"``), packed like a share; a torch worker is
            capped to it (``torch.cuda.set_per_process_memory_fraction``).
        name: the stage's name in errors, stats and plans. Left unset, it is the class (or
            function) name; when two different stages of a graph would get the same name that
            way, the graph names each by its place (see `parapipe.graph.as_graph`).
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
            requests and ``map`` are grouped into batches before they reach the worker. A count
            of items, or, with ``batch_cost`` overridden, a total cost (e.g. ``30.0`` audio
            seconds); any number > 0.
        batch_wait: the most seconds (>= 0) a batch waits to fill, from its first item's arrival.
        batch_fallback: when ``process_batch`` raises, retry the batch's items one by one so only
            the bad item fails (else every item of the batch gets the error).
        runtime_env: on the Ray backend, this stage's own Ray runtime env (``{"pip": [...]}``,
            ``{"env_vars": {...}}``, ...); ignored by the local backend. See docs/ray.md.
        python: run this stage's workers on another interpreter: its path, or a virtualenv or
            conda env directory, for libraries whose versions conflict with the rest of the
            graph. That environment must hold parapipe and the stage's libraries; items and
            results cross it by pickle. See docs/io-and-environments.md.
        concurrency: items one worker runs at once, for I/O-bound stages: on a thread pool, or
            on an event loop when ``process`` is ``async def``. A stage holds at most
            ``replicas * concurrency`` items (batches, for a batched stage).
        rate_limit: at most this many items per second leave for this stage's workers, across
            all its replicas: ``"20/s"``, ``"600/min"``, or a number per second.
        nice: the CPU priority of this stage's workers, as a Unix nice value: 0 is normal, 19
            runs only on what other processes leave. None (the default) lets a throughput plan
            lower a side branch that finishes before its siblings anyway (`parapipe.priority`);
            0 keeps the stage normal whatever the plan.
    """

    name: str | None = None
    cpus: int | Literal["auto"] = 1
    replicas: int = 1
    gpus: GpuSpec = None
    gpu_memory: int | str | None = None
    retries: int | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    max_memory: int | str | None = None
    max_items_per_worker: int | None = None
    batch_size: int | float = 8
    batch_wait: float = 0.01
    batch_fallback: bool = False
    runtime_env: dict[str, Any] | None = None
    python: str | os.PathLike[str] | None = None
    concurrency: int = 1
    rate_limit: float | str | None = None
    nice: int | None = None

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
    def is_async(self) -> bool:
        """True when ``process`` is ``async def``: its worker runs items on an event loop."""
        return inspect.iscoroutinefunction(self.process)

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
        for option in _OPTION_NAMES:
            _check_option(option, getattr(self, option), f"stage {self.stage_name!r}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check options set as class attributes when the class is defined, naming the class,
        rather than at engine start with nothing to point at."""
        super().__init_subclass__(**kwargs)
        for option in _OPTION_NAMES:
            value = cls.__dict__.get(option, _UNSET)
            if value is not _UNSET and not hasattr(type(value), "__get__"):  # a property is checked per instance
                _check_option(option, value, f"stage class {cls.__name__}")

    def gpus_for(self, replica: int) -> tuple[int, ...]:
        """The GPU device ids a ``gpus`` list gives one replica; ``()`` for a number of GPUs,
        which the engine places (`parapipe.gpus`)."""
        if _is_number(self.gpus):
            return ()
        return _gpu_ids(self.gpus, replica, f"stage {self.stage_name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stage_name!r} replicas={self.replicas} cpus={self.cpus}>"


class _FunctionStage(Stage):
    """A plain function as a stage. Pickled as a reference to the function, never by value."""

    def __init__(self, fn: Callable[..., Any], **opts: Any) -> None:
        if not callable(fn):
            raise ConfigError(f"pp.stage() needs a function, got {fn!r}")
        self.fn = fn
        self.name = opts.pop("name", None)
        for key, value in opts.items():
            if key not in _OPTION_NAMES:
                raise ConfigError(f"unknown stage option {key!r}; use {list(_OPTION_NAMES)}")
            setattr(self, key, value)
        self.validate()

    @property
    def stage_name(self) -> str:
        return self.name or str(getattr(self.fn, "__name__", "stage"))

    def process(self, item: Any) -> Any:
        return self.fn(item)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

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


def same_stage(a: Stage, b: Stage) -> bool:
    """True when ``a`` and ``b`` are one stage with shared workers: the same object, or two
    wrappings of the same function with equal options (a function named twice in a graph)."""
    if a is b:
        return True
    if not (isinstance(a, _FunctionStage) and isinstance(b, _FunctionStage)) or a.fn is not b.fn:
        return False
    return type(a) is type(b) and all(getattr(a, o) == getattr(b, o) for o in _OPTION_NAMES)


@overload
def stage(fn: Callable[..., Any], /, **opts: Any) -> Stage: ...
@overload
def stage(fn: None = None, /, **opts: Any) -> Callable[[Callable[..., Any]], Stage]: ...


def stage(fn: Callable[..., Any] | None = None, /, **opts: Any) -> Any:
    """Make a stage of a plain function: ``pp.stage(fn, cpus=1, replicas=2)`` or ``@pp.stage(...)``.

    The function must live at module level so workers can import it under ``spawn``.
    """
    if fn is None:
        return lambda f: _FunctionStage(f, **opts)
    return _FunctionStage(fn, **opts)
