from __future__ import annotations

import pickle

import pytest

import parapipe as pp
from parapipe.graph import as_graph, latency_tree, stages


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


def names(graph):
    return [s.stage_name for s in stages(graph)]


def test_explicit_equal_names_of_different_stages_are_rejected():
    with pytest.raises(pp.GraphError, match="named 'm'"):
        stages(pp.Parallel(a=Model().options(name="m"), b=Model().options(name="m")))
    assert names(pp.Parallel(a=Model(), b=Model().options(name="m2"))) == ["Model", "m2"]


def test_unnamed_instances_of_one_class_are_named_by_their_place():
    assert names(pp.Parallel(x=Model(), y=Model())) == ["x.Model", "y.Model"]
    assert names(pp.Pipeline(Model(), pp.Parallel(x=Model(), y=Model()), Model())) == [
        "Model",
        "x.Model",
        "y.Model",
        "Model_2",
    ]
    nested = pp.Parallel(o=pp.Parallel(x=Model()), p=pp.Pipeline(Model(), Model()))
    assert names(nested) == ["o.x.Model", "p.Model", "p.Model_2"]
    assert names(pp.Parallel(a=Model(), b=Model().options(name="Model"))) == ["a.Model", "Model"]


def test_resolved_graph_carries_the_names_without_touching_the_user_stages():
    x, y = Model(), Model()
    graph = as_graph(pp.Parallel(x=x, y=y))
    assert [graph.branches[k].stage_name for k in "xy"] == ["x.Model", "y.Model"]
    assert x.name is None and y.name is None and x.stage_name == "Model"
    again = as_graph(graph)
    assert [s.stage_name for s in stages(again)] == ["x.Model", "y.Model"]
    assert latency_tree(graph) == ("par", [("stage", "x.Model"), ("stage", "y.Model")])


def test_one_stage_object_used_twice_stays_one_stage():
    m = Model()
    graph = as_graph(pp.Pipeline(m, pp.Parallel(a=m, b=double)))
    assert names(graph) == ["Model", "double"]
    assert graph.steps[0] is m and graph.steps[1].branches["a"] is m


def test_a_plain_function_used_twice_is_one_stage():
    graph = as_graph(pp.Pipeline(double, pp.Parallel(p=decorated, q=double)))
    assert names(graph) == ["double", "decorated"]
    assert graph.steps[0] is graph.steps[1].branches["q"]
    assert names(pp.Pipeline(double, pp.stage(double))) == ["double"]
    assert names(pp.Pipeline(double, pp.stage(double, replicas=2))) == ["double", "double_2"]
    assert names(pp.Pipeline(double, pp.stage(double, name="twice"))) == ["double", "twice"]


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
    with pytest.raises(pp.ConfigError, match="gpus"):
        Model().options(gpus=[0, -1])


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"batch_size": 0}, "'Model': batch_size must be a number > 0"),
        ({"batch_size": -2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": "8"}, "batch_size"),
        ({"batch_size": float("inf")}, "batch_size"),
        ({"batch_wait": -0.1}, "'Model': batch_wait must be a number of seconds >= 0"),
        ({"batch_wait": None}, "batch_wait"),
        ({"batch_fallback": "yes"}, "batch_fallback must be True or False"),
        ({"name": ""}, "name"),
    ],
)
def test_batch_options_are_checked_where_they_are_set(opts, match):
    with pytest.raises(pp.ConfigError, match=match):
        Model().options(**opts)
    with pytest.raises(pp.ConfigError, match=match.replace("'Model'", "'double'")):
        pp.stage(double, **opts)


def test_valid_batch_options_pass():
    assert Model().options(batch_size=2.5, batch_wait=0, batch_fallback=True).batch_size == 2.5
    assert pp.stage(double, batch_size=4, batch_wait=0.5).batch_wait == 0.5


def test_class_level_options_are_checked_when_the_class_is_defined():
    with pytest.raises(pp.ConfigError, match=r"stage class Bad: batch_size must be a number > 0 .*, got 0$"):

        class Bad(pp.Stage):
            batch_size = 0

    with pytest.raises(pp.ConfigError, match="stage class Slow: batch_wait"):

        class Slow(pp.Stage):
            batch_wait = -1

    with pytest.raises(pp.ConfigError, match="stage class Many: replicas"):

        class Many(pp.Stage):
            replicas = 0

    class Named(pp.Stage):
        @property
        def name(self):
            return "computed"

    assert Named().stage_name == "computed"


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
