from __future__ import annotations

import pickle

import pytest

import parapipe as pp
from parapipe.graph import latency_tree, stages


def double(x):
    return 2 * x


@pp.stage(replicas=2)
def decorated(x):
    return x + 1


class Model(pp.Stage):
    def process(self, item):
        return item


def test_functions_become_stages_and_nest():
    graph = pp.Pipeline(double, pp.Parallel(a=Model(), b=decorated), decorated)
    names = [s.stage_name for s in stages(graph)]
    assert names == ["double", "Model", "decorated"]
    assert latency_tree(graph) == (
        "seq",
        [("stage", "double"), ("par", [("stage", "Model"), ("stage", "decorated")]), ("stage", "decorated")],
    )


def test_duplicate_names_of_different_stages_are_rejected():
    with pytest.raises(pp.GraphError, match="named 'Model'"):
        stages(pp.Parallel(a=Model(), b=Model()))
    assert len(stages(pp.Parallel(a=Model(), b=Model().options(name="m2")))) == 2


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: pp.Pipeline(), "at least one"),
        (lambda: pp.Parallel(), "at least one"),
        (lambda: pp.Pipeline(Model), "pass an instance"),
        (lambda: pp.Pipeline(42), "not a Stage"),
        (lambda: pp.Parallel(merge=3, a=Model()), "merge"),
    ],
)
def test_invalid_graphs_say_what_to_fix(build, match):
    with pytest.raises(pp.GraphError, match=match):
        build()


def test_stage_options_validate():
    with pytest.raises(pp.ConfigError, match="replicas"):
        Model().options(replicas=0)
    with pytest.raises(pp.ConfigError, match="cpus"):
        Model().options(cpus=-1)
    with pytest.raises(pp.ConfigError, match="unknown"):
        Model().options(colour="red")
    assert Model().options(gpus=[0, 1]).gpus_for(3) == (1,)
    assert Model().options(gpus=[[0, 1]]).gpus_for(3) == (0, 1)


def test_decorated_function_stage_pickles_by_reference():
    clone = pickle.loads(pickle.dumps(decorated))
    assert clone.process(1) == 2 and clone.replicas == 2
    assert pickle.loads(pickle.dumps(pp.stage(double))).process(2) == 4


def test_current_outside_a_worker_describes_the_process():
    ctx = pp.current()
    assert ctx.stage is None and ctx.cpus >= 1 and ctx.cores


def test_load_graph_imports_specs_calls_factories_and_takes_aliases():
    from parapipe.graph import load_graph

    assert isinstance(load_graph("tests.integration._stages:signal_graph"), pp.Pipeline)
    assert load_graph("parapipe._demo:graph").branches.keys() == {"transcribe", "speaker", "gender"}
    assert load_graph("demo", {"demo": "parapipe._demo:graph"}).branches.keys() == {"transcribe", "speaker", "gender"}
    with pytest.raises(pp.GraphError, match="MODULE:GRAPH"):
        load_graph("no-colon")
    with pytest.raises(pp.GraphError, match=r"one of \['demo'\]"):
        load_graph("no-colon", {"demo": "parapipe._demo:graph"})


def test_load_graph_leaves_sys_path_alone_and_the_cli_adds_the_current_directory(monkeypatch):
    import sys

    from parapipe._apps import GRAPH_ALIASES, load_cli_graph
    from parapipe.graph import load_graph

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != "."])
    load_graph("parapipe._demo:graph")
    assert "." not in sys.path
    load_cli_graph("parapipe._demo:graph")
    assert sys.path[0] == "."
    assert "audio" in GRAPH_ALIASES
