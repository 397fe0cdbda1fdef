"""Composition of stages: `Pipeline` (in sequence) and `Parallel` (same input, branches at once).

A graph is plain data and knows nothing of processes; the engine turns it into worker pools.
Graphs nest: ``Pipeline(decode, Parallel(asr=A(), spk=B()), summarize)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

from .errors import GraphError
from .stage import Stage, _FunctionStage, same_stage

__all__ = [
    "Node",
    "Parallel",
    "Pipeline",
    "as_graph",
    "graph_shape",
    "iter_stages",
    "latency_tree",
    "load_graph",
    "map_stages",
    "stages",
]

Node = Union[Stage, "Pipeline", "Parallel"]
Merge = Callable[[dict[str, Any]], Any]


def _as_node(step: Any, where: str) -> Node:
    if isinstance(step, (Stage, Pipeline, Parallel)):
        return step
    if isinstance(step, type) and issubclass(step, Stage):
        raise GraphError(f"{where}: got the class {step.__name__}; pass an instance, {step.__name__}()")
    if callable(step):
        return _FunctionStage(step)
    raise GraphError(f"{where}: {step!r} is not a Stage, a function, a Pipeline or a Parallel")


class Pipeline:
    """Stages in sequence: each one's output is the next one's input.

    Independent items overlap: while stage B works on item 1, stage A works on item 2.
    """

    def __init__(self, *steps: Any) -> None:
        if not steps:
            raise GraphError("Pipeline() needs at least one stage")
        self.steps: tuple[Node, ...] = tuple(_as_node(s, f"Pipeline step {i}") for i, s in enumerate(steps))

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(map(repr, self.steps))})"


def merge_dict(results: dict[str, Any]) -> dict[str, Any]:
    """The default merge of `Parallel`: the branch results keyed by branch name."""
    return results


class Parallel:
    """Branches that each get the same input and run at the same time; results are merged.

    ``merge`` receives ``{branch_name: result}`` and runs in the parent process, so keep it cheap
    (put heavy post-processing in a stage after the ``Parallel``). The default returns that dict.
    """

    def __init__(self, merge: Merge | None = None, **branches: Any) -> None:
        if not branches:
            raise GraphError("Parallel() needs at least one named branch, e.g. Parallel(asr=Transcribe())")
        if merge is not None and not callable(merge):
            raise GraphError(f"Parallel merge must be a function of one dict, got {merge!r}")
        self.merge: Merge = merge or merge_dict
        self.branches: dict[str, Node] = {
            name: _as_node(b, f"Parallel branch {name!r}") for name, b in branches.items()
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.branches.items())
        return f"Parallel({inner})"


def iter_stages(node: Node) -> Iterator[Stage]:
    """Every stage of a graph in order of appearance (a stage used twice appears twice)."""
    if isinstance(node, Stage):
        yield node
    elif isinstance(node, Pipeline):
        for step in node.steps:
            yield from iter_stages(step)
    elif isinstance(node, Parallel):
        for branch in node.branches.values():
            yield from iter_stages(branch)
    else:
        raise GraphError(f"{node!r} is not a Stage, a Pipeline or a Parallel")


def stages(node: Any) -> list[Stage]:
    """The distinct stages of a graph, in order of appearance, each carrying its resolved name
    (see `as_graph`); validates the graph."""
    return _resolve(_as_node(node, "graph"))[1]


def latency_tree(node: Node) -> tuple[Any, ...]:
    """The shape the latency planner reads: which stages run one after another or together."""
    if isinstance(node, Stage):
        return ("stage", node.stage_name)
    if isinstance(node, Pipeline):
        return ("seq", [latency_tree(s) for s in node.steps])
    return ("par", [latency_tree(b) for b in node.branches.values()])


def graph_shape(node: Node) -> dict[str, Any]:
    """The graph as JSON-ready data, for pictures of it (the dashboard, ``parapipe plan``):
    ``{"stage": name}``, ``{"pipeline": [steps]}`` or ``{"parallel": {branch: shape}}``.
    Give it a named graph (`as_graph`) so the names match the engine's stats."""
    if isinstance(node, Stage):
        return {"stage": node.stage_name}
    if isinstance(node, Pipeline):
        return {"pipeline": [graph_shape(s) for s in node.steps]}
    return {"parallel": {name: graph_shape(b) for name, b in node.branches.items()}}


def as_graph(node: Any) -> Node:
    """The graph the engine runs: a bare function or stage becomes a one-stage graph, every
    stage is validated, and every stage carries a name unique in the graph.

    Names key worker pools, stats, plans and errors. A stage given ``name=`` keeps it, and two
    different stages given the same name are refused. A stage left unnamed is called by its
    class (or function) name; when that name is taken by another stage of the graph, it is
    prefixed by the ``Parallel`` branch names it sits in, outermost first (``x.Nap`` and
    ``y.Nap`` for ``Parallel(x=Nap(), y=Nap())``), and one still taken gets ``_2``, ``_3``, ...
    in order of appearance (``Nap`` and ``Nap_2`` for ``Pipeline(Nap(), Nap())``).

    One stage object used twice is one stage with shared workers, and so is one plain function
    used twice with the same options. Renamed stages are copies; the caller's objects are not
    changed. Applied to its own result it changes nothing.
    """
    return _resolve(_as_node(node, "graph"))[0]


def _resolve(node: Node) -> tuple[Node, list[Stage]]:
    """The graph with its stages named as `as_graph` says, and its distinct named stages."""
    distinct: list[tuple[Stage, tuple[str, ...]]] = []
    for s, path in _placed(node, ()):
        if not any(same_stage(d, s) for d, _ in distinct):
            s.validate()
            distinct.append((s, path))
    names = _names(distinct)
    named = [s if s.stage_name == name else s.options(name=name) for (s, _), name in zip(distinct, names, strict=True)]

    def renamed(s: Stage) -> Stage:
        return next(n for (d, _), n in zip(distinct, named, strict=True) if same_stage(d, s))

    return map_stages(node, renamed), named


def _placed(node: Node, path: tuple[str, ...]) -> Iterator[tuple[Stage, tuple[str, ...]]]:
    """Every stage with the ``Parallel`` branch names leading to it, in order of appearance."""
    if isinstance(node, Stage):
        yield node, path
    elif isinstance(node, Pipeline):
        for step in node.steps:
            yield from _placed(step, path)
    else:
        for branch, child in node.branches.items():
            yield from _placed(child, (*path, branch))


def _names(distinct: list[tuple[Stage, tuple[str, ...]]]) -> list[str]:
    """The name of each distinct stage, by the rule in `as_graph`."""
    explicit: dict[str, Stage] = {}
    for s, _ in distinct:
        if s.name is not None and explicit.setdefault(s.name, s) is not s:
            raise GraphError(
                f"two different stages are named {s.name!r}; give one another name, "
                f"e.g. {type(s).__name__}(...).options(name='{s.name}_2'), or leave both unnamed "
                "and the graph names them by their place"
            )
    defaults = [s.stage_name for s, _ in distinct if s.name is None]
    kept = {n for n in defaults if defaults.count(n) == 1 and n not in explicit}
    used = set(explicit) | kept
    names = []
    for s, path in distinct:
        name = s.stage_name
        if s.name is None and name not in kept:
            base = name = ".".join((*path, name))
            n = 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
            used.add(name)
        names.append(name)
    return names


def map_stages(node: Node, fn: Callable[[Stage], Stage]) -> Node:
    """The same graph shape with every stage replaced by ``fn(stage)`` (e.g. new options)."""
    if isinstance(node, Stage):
        return fn(node)
    if isinstance(node, Pipeline):
        return Pipeline(*(map_stages(s, fn) for s in node.steps))
    return Parallel(merge=node.merge, **{k: map_stages(b, fn) for k, b in node.branches.items()})


def load_graph(spec: str, aliases: Mapping[str, str] | None = None) -> Any:
    """Import ``MODULE:NAME`` (or a short name from ``aliases``, mapped to such a spec); a
    callable that is not a stage or graph is called without arguments to build one (a factory).

    The module is imported from ``sys.path`` as it is: a command line that should find modules
    in the current directory puts it there itself (`parapipe._apps.load_cli_graph`).
    """
    names = aliases or {}
    spec = names.get(spec, spec)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        known = f" or one of {sorted(names)}" if names else ""
        raise GraphError(f"expected MODULE:GRAPH (e.g. myapp.graphs:pipeline){known}, got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, (Stage, Pipeline, Parallel)) and callable(obj):
        built = obj()
        if isinstance(built, (Stage, Pipeline, Parallel)):
            return built
    return obj
